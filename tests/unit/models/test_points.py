"""Points by module path (PointSpec) and attach_permutations (mmseg_keyprotect.models.points)."""
from __future__ import annotations

import copy
from typing import Tuple

import pytest
import torch
from mmseg.models.decode_heads import FCNHead
from torch import Tensor, nn

from mmseg_keyprotect.models import (ChannelPermutation, PointPermutation, PointSpec,
                                     attach_permutations, channel_permutation_index)
from mmseg_keyprotect.models.points import POINTS_ATTR


class Pair(nn.Module):
    """Returns a tuple, like a patch embedding's ``(tokens, hw_shape)``."""

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        return x, x.mean(dim=(2, 3))


class Toy(nn.Module):
    """stem (3->8) -> body (8->12) -> pair -> head (12->2)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 1)
        self.body = nn.Sequential(nn.Conv2d(8, 12, 1), nn.ReLU())
        self.pair = Pair()
        self.head = nn.Conv2d(12, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        x, _ = self.pair(self.body(self.stem(x)))
        return self.head(x)


def alpha(key, purpose: str, channels: int) -> Tensor:
    return channel_permutation_index(key, purpose, channels)


@pytest.fixture
def toy() -> Toy:
    torch.manual_seed(0)
    return Toy().eval()


@pytest.fixture
def x() -> Tensor:
    return torch.randn(2, 3, 5, 5)


# ---------------------------------------------------------------- PointSpec
@pytest.mark.parametrize('text, expected', [
    ('backbone.layer1', PointSpec('backbone.layer1')),
    ('backbone.layer1:output', PointSpec('backbone.layer1')),
    ('backbone.layer1:input', PointSpec('backbone.layer1', 'input')),
    ('decode_head.1.conv_seg:input', PointSpec('decode_head.1.conv_seg', 'input')),
    ('backbone.layers.0.0:output[0]', PointSpec('backbone.layers.0.0', 'output', 0)),
    (':output[3]', PointSpec('', 'output', 3)),
])
def test_parse_strings(text, expected):
    assert PointSpec.parse(text) == expected


def test_parse_dict_and_name():
    spec = PointSpec.parse(dict(path='layers.0.2', channel_dim=-1, channels=32, index=1))
    assert spec == PointSpec('layers.0.2', 'output', 1, 32, -1)
    assert spec.name() == 'layers.0.2:output[1]'
    assert spec.name('backbone') == 'backbone.layers.0.2:output[1]'
    assert PointSpec.parse(spec.name()) == PointSpec('layers.0.2', 'output', 1)
    assert PointSpec('').name('backbone') == 'backbone:output'


@pytest.mark.parametrize('spec, message', [
    ('', 'cannot parse point'),
    ('layer1:middle', "where must be one of"),
    ('layer1:output[-1]', 'cannot parse point'),
    ('layer 1', 'cannot parse point'),
    ('layer1..conv', 'dotted module path'),
    (dict(path='layer1', where='inside'), 'where must be one of'),
    (dict(path='layer1', index=-2), 'index must be None or an integer >= 0'),
    (dict(path='layer1', dim=1), r"unknown fields \['dim'\]"),
    (dict(where='input'), 'needs path='),
    (3, 'must be a string or a dict'),
])
def test_parse_errors(spec, message):
    with pytest.raises(ValueError, match=message):
        PointSpec.parse(spec)


# ------------------------------------------------------- attach_permutations
def test_output_and_input_points_land_on_their_tensors(toy, x, key):
    reference = copy.deepcopy(toy)
    perms = attach_permutations(toy, ['stem', 'head:input'], key)
    assert getattr(toy, POINTS_ATTR) is perms
    a_stem, a_head = alpha(key, 'stem:output', 8), alpha(key, 'head:input', 12)
    expected = reference.head(reference.body(reference.stem(x)[:, a_stem])[:, a_head])
    assert torch.equal(toy(x), expected)


def test_tuple_element(toy, x, key):
    reference = copy.deepcopy(toy)
    attach_permutations(toy, ['pair:output[0]'], key)
    a = alpha(key, 'pair:output[0]', 12)
    assert torch.equal(toy(x), reference.head(reference.body(reference.stem(x))[:, a]))


def test_token_features_channels_last(key):
    linear = nn.Linear(8, 3)
    root = nn.Module()
    root.proj = linear
    attach_permutations(root, [dict(path='proj', where='input', channel_dim=-1)], key)
    tokens = torch.randn(2, 10, 8)
    a = alpha(key, 'proj:input', 8)
    assert torch.equal(root.proj(tokens), nn.functional.linear(tokens[..., a], linear.weight,
                                                               linear.bias))


def test_prefix_changes_purpose(toy, x, key):
    (perm, ) = attach_permutations(toy, [dict(path='stem', channels=8)], key, prefix='backbone')
    assert perm.purpose == 'backbone.stem:output'
    assert torch.equal(perm.index, alpha(key, 'backbone.stem:output', 8))


def test_plain_is_the_unprotected_model_and_state_dict_unchanged(toy, x, key, other_key):
    reference = copy.deepcopy(toy)
    attach_permutations(toy, ['stem', 'body:input', 'head:input'], key)
    assert list(toy.state_dict()) == list(reference.state_dict())
    keyed = [m for m in toy.modules() if isinstance(m, ChannelPermutation)]
    assert len(keyed) == 3
    outputs = {}
    for condition, use in (('correct', key), ('plain', None), ('incorrect', other_key)):
        for m in keyed:
            m.use_key(use)
        outputs[condition] = toy(x)
    assert torch.equal(outputs['plain'], reference(x))
    assert not torch.allclose(outputs['correct'], outputs['plain'])
    assert not torch.allclose(outputs['correct'], outputs['incorrect'])
    assert not torch.allclose(outputs['plain'], outputs['incorrect'])


def test_several_points_get_different_permutations(key):
    root = nn.Module()
    root.a, root.b = nn.Conv2d(16, 16, 1), nn.Conv2d(16, 16, 1)
    points = [dict(path='a', channels=16), dict(path='b', channels=16),
              dict(path='b', where='input', channels=16)]
    perms = attach_permutations(root, points, key)
    indices = [p.index.tolist() for p in perms]
    assert len({tuple(i) for i in indices}) == 3


def test_lazy_and_explicit_channels(toy, x, key):
    perms = attach_permutations(toy, [dict(path='head', where='input', channels=12), 'stem'], key)
    assert perms[0].num_channels == 12 and perms[1].num_channels is None
    toy(x)
    assert perms[1].num_channels == 8


def test_channel_mismatch_at_forward(toy, x, key):
    # A Sequential does not declare its channel count: checked at the first forward.
    attach_permutations(toy, [dict(path='body', channels=7)], key)
    with pytest.raises(ValueError, match="'body:output'.*expected 7 channels on axis 1, got 12"):
        toy(x)


@pytest.mark.parametrize('point, message', [
    (dict(path='head', where='input', channels=7), "'head:input'.*channels=7.*in_channels=12"),
    (dict(path='stem', channels=3), "'stem:output'.*channels=3.*out_channels=8"),
])
def test_channel_mismatch_at_build_for_modules_that_declare_it(toy, key, point, message):
    with pytest.raises(ValueError, match=message):
        attach_permutations(toy, [point], key)
    assert not hasattr(toy, 'keyprotect_points')


def test_list_value_without_index(key):
    root = nn.Module()
    root.head = FCNHead(in_channels=[4, 4], in_index=[0, 1], input_transform='resize_concat',
                        channels=4, num_classes=2, num_convs=1)
    attach_permutations(root, ['head:input'], key)
    with pytest.raises(ValueError, match=r"point 'head:input': the input is a list of 2 elements; "
                       r"choose one with index=N \('head:input\[N\]'\)"):
        root.head([torch.randn(1, 4, 4, 4)] * 2)


def test_index_out_of_range(toy, x, key):
    attach_permutations(toy, ['pair:output[2]'], key)
    with pytest.raises(ValueError, match='index 2 given, but the output is a tuple with 2'):
        toy(x)


def test_deepcopy_rebinds_hooks_to_copied_permutations(toy, x, seed_key):
    attach_permutations(toy, ['stem'], seed_key)
    clone = copy.deepcopy(toy)
    for m in clone.modules():
        if isinstance(m, PointPermutation):
            m.use_key(None)
    plain = clone(x)
    assert not torch.allclose(toy(x), plain)
    for m in toy.modules():
        if isinstance(m, PointPermutation):
            m.use_key(None)
    assert torch.equal(toy(x), plain)


def test_bad_path_lists_nearby_modules(toy, key):
    with pytest.raises(ValueError) as info:
        attach_permutations(toy, ['body.2'], key)
    message = str(info.value)
    assert "no module at path 'body.2'" in message
    assert "'body.0'" in message and "'body.1'" in message
    with pytest.raises(ValueError, match=r"no module at path 'stme'.*'stem'"):
        attach_permutations(toy, ['stme:input'], key)


@pytest.mark.parametrize('points, message', [
    ([], 'no points given'),
    (['stem', 'stem:output'], r"points named more than once: \['stem:output'\]"),
])
def test_bad_point_lists(toy, key, points, message):
    with pytest.raises(ValueError, match=message):
        attach_permutations(toy, points, key)


def test_missing_key(toy):
    with pytest.raises(ValueError, match='needs a key'):
        attach_permutations(toy, ['stem'])


def test_attach_twice_or_to_a_container(toy, key):
    attach_permutations(toy, ['stem'], key)
    with pytest.raises(ValueError, match='already has permutations attached'):
        attach_permutations(toy, ['head'], key)
    with pytest.raises(ValueError, match='cannot attach permutations to a Sequential'):
        attach_permutations(toy.body, ['0'], key)
