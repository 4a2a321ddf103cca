"""Weight matching against a public reference undoes absorbed permutations (attacks/weight_matching.py)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_keyprotect.attacks.weight_matching import (align_to_reference, match_channels,
                                                      matched_init)
from mmseg_keyprotect.models.weight_encryption import (attach_weight_encryption,
                                                       sealed_state_dict)
from mmseg_keyprotect.posthoc import absorb_permutations
from mmseg_keyprotect.posthoc.absorb import max_output_difference
from mmseg_keyprotect.posthoc.segmentor import forward_heads, probe_input

from ..posthoc.families import build_family

DEMO_BASELINE = Path(__file__).resolve().parents[3] / 'configs/demo/fcn_r18-d8_baseline_demo.py'


def test_match_channels_finds_the_permutation():
    generator = torch.Generator().manual_seed(0)
    reference = torch.randn(16, 12, 3, 3, generator=generator)
    alpha = torch.randperm(12, generator=generator)
    stored = reference[:, alpha] + 0.01 * torch.randn(16, 12, 3, 3, generator=generator)
    assert torch.equal(match_channels(stored, reference, 1), alpha)


def test_a_close_public_reference_undoes_post_hoc_protection(key):
    """Fine-tuning drift of 1 % of each tensor's spread: the plain model comes back."""
    plain = build_family('fcn')
    result = absorb_permutations(plain, 'auto', key)
    generator = torch.Generator().manual_seed(1)
    reference = {name: t + 0.01 * t.float().std() * torch.randn(t.shape, generator=generator)
                 if t.is_floating_point() and t.numel() > 1 else t
                 for name, t in plain.state_dict().items()}
    inputs = probe_input(plain, seed=3)
    with torch.no_grad():
        expected = forward_heads(plain, inputs)
        attacked = build_family('fcn')
        attacked.load_state_dict(result.state_dict)  # as stored, no key
        as_stored = max_output_difference(expected, forward_heads(attacked, inputs))
        attacked.load_state_dict(align_to_reference(result.state_dict, reference))
        aligned = max_output_difference(expected, forward_heads(attacked, inputs))
    assert aligned < as_stored / 10


def _drifted(state, scale, seed=1):
    generator = torch.Generator().manual_seed(seed)
    return {name: t + scale * t.float().std() * torch.randn(t.shape, generator=generator)
            if t.is_floating_point() and t.numel() > 1 else t for name, t in state.items()}


def test_matched_init_reads_the_files_and_a_backbone_only_reference(tmp_path, key):
    """The suite's entry: stolen and public checkpoint files; a public backbone checkpoint
    names its tensors without ``backbone.``."""
    torch.manual_seed(0)
    plain = MODELS.build(Config.fromfile(str(DEMO_BASELINE)).model).eval()  # half-width R18
    result = absorb_permutations(plain, ['backbone.layer1:input'], key)  # paper 2's stem point
    stolen = tmp_path / 'stolen.pth'
    torch.save({'state_dict': result.state_dict, 'meta': {}}, stolen)
    public = tmp_path / 'public_backbone.pth'
    torch.save({'state_dict': {name[len('backbone.'):]: t
                               for name, t in _drifted(plain.state_dict(), 0.01).items()
                               if name.startswith('backbone.')}}, public)
    matched = matched_init(str(stolen), str(public))
    truth = plain.state_dict()
    changed = [n for n, t in result.state_dict.items() if n.startswith('backbone.')
               and t.dim() == 4 and not torch.equal(t, truth[n])]
    assert changed  # the permutations reach the backbone's convolutions
    for name in changed:
        stored_error = (result.state_dict[name] - truth[name]).norm()
        assert (matched[name] - truth[name]).norm() < 0.1 * stored_error, name
    head = 'decode_head.conv_seg.weight'  # not in the reference: kept as stored
    assert torch.equal(matched[head], result.state_dict[head])


def test_matched_init_refuses_sealed_weights_and_a_foreign_reference(tmp_path, key):
    plain = build_family('fcn')
    attach_weight_encryption(plain, key, False)
    sealed = tmp_path / 'sealed.pth'
    torch.save({'state_dict': sealed_state_dict(plain)}, sealed)
    with pytest.raises(ValueError, match=r'sealed.*needs the stored weights in clear') as error:
        matched_init(str(sealed), str(sealed))
    assert '\n' not in str(error.value)
    clear, other = tmp_path / 'clear.pth', tmp_path / 'other.pth'
    torch.save({'state_dict': build_family('fcn').state_dict()}, clear)
    torch.save({'state_dict': {'fc.weight': torch.zeros(2, 2)}}, other)
    with pytest.raises(ValueError, match='shares no tensor name'):
        matched_init(str(clear), str(other))
