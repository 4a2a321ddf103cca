"""Weight matching against a public reference undoes absorbed permutations (attacks/weight_matching.py)."""
from __future__ import annotations

import torch

from mmseg_keyprotect.attacks.weight_matching import align_to_reference, match_channels
from mmseg_keyprotect.posthoc import absorb_permutations
from mmseg_keyprotect.posthoc.absorb import max_output_difference
from mmseg_keyprotect.posthoc.segmentor import forward_heads, probe_input

from ..posthoc.families import build_family


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
