"""Absorbed feature permutations on small FCN, DeepLabV3+, PSPNet and SegFormer models."""
from __future__ import annotations

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_keyprotect.posthoc import PointRefused, absorb_permutations
from mmseg_keyprotect.posthoc.absorb import max_output_difference
from mmseg_keyprotect.posthoc.segmentor import forward_heads, probe_input
from mmseg_keyprotect.protection import Protection

from .families import build_family, family_cfg


def _protected(family, points, key):
    cfg = family_cfg(family)
    model = dict(cfg.model, type='KeyProtectedEncoderDecoder',
                 protection=dict(key=key, points=points))
    return MODELS.build(model).eval()


@pytest.mark.parametrize('family', ['fcn', 'deeplabv3plus', 'pspnet', 'segformer'])
def test_auto_points_absorbed_exactly_through_the_protected_config(family, key, other_key):
    plain = build_family(family)
    original = {k: v.clone() for k, v in plain.state_dict().items()}
    result = absorb_permutations(plain, 'auto', key)
    assert result.points and result.max_difference <= 1e-4
    assert any(not torch.equal(original[name], result.state_dict[name])
               for name in result.changed)
    assert all(torch.equal(plain.state_dict()[k], v) for k, v in original.items())

    # the normal protected model (same key, same points) reproduces the plain model
    points = [dict(path=s.path, where=s.where, index=s.index, channels=s.channels,
                   channel_dim=s.channel_dim) for s in result.points]
    protected = _protected(family, points, key)
    protected.load_state_dict(result.state_dict)
    inputs = probe_input(plain, seed=5, batch=2)
    with torch.no_grad():
        expected = forward_heads(plain, inputs)
        correct = forward_heads(protected, inputs)
        protection = Protection.of(protected)
        with protection.applied('plain'):
            without_key = forward_heads(protected, inputs)
        with protection.applied(other_key):
            wrong_key = forward_heads(protected, inputs)
    assert max_output_difference(expected, correct) <= 1e-4
    scale = max(float(t.abs().max()) for t in expected)
    assert max_output_difference(expected, without_key) > 1e-2 * scale
    assert max_output_difference(expected, wrong_key) > 1e-2 * scale


def test_explicit_points_of_paper_2(key):
    plain = build_family('fcn')
    result = absorb_permutations(plain, ['backbone.layer1:input', 'backbone.layer2',
                                         'decode_head.conv_seg:input'], key)
    assert [s.name() for s in result.points] == [
        'backbone.layer1:input', 'backbone.layer2:output', 'decode_head.conv_seg:input']
    assert result.max_difference <= 1e-4
    # layer1 has no downsample: its residual stream carries the permutation, so each
    # block's last conv produces it permuted, and layer2's first block absorbs it
    assert {'backbone.layer1.0.conv1.weight', 'backbone.layer1.0.conv2.weight',
            'backbone.layer1.1.bn2.running_mean', 'backbone.layer2.0.conv1.weight',
            'backbone.layer2.0.downsample.0.weight', 'backbone.layer3.0.conv1.weight'} \
        <= set(result.changed)
    assert not any(name.startswith('backbone.stem') for name in result.changed)


def test_refused_point_is_one_line(key):
    plain = build_family('fcn')
    with pytest.raises(PointRefused, match=r"^point 'decode_head.conv_seg:output': its "
                       'permutation reaches the output of the model'):
        absorb_permutations(plain, ['decode_head.conv_seg'], key)
