"""ChannelPermutation: the keyed channel permutation of paper 2, against a naive reference."""
from __future__ import annotations

import copy
import pickle

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_keyprotect.keyed import KeyedComponent
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import ChannelPermutation, channel_permutation_index


def naive_permute(x: torch.Tensor, alpha: list, channel_dim: int) -> torch.Tensor:
    """x'(i, j, k) = x(alpha_i, j, k), one channel at a time (paper 2, Fig. 4)."""
    channels = [x.select(channel_dim, a) for a in alpha]
    return torch.stack(channels, dim=channel_dim % x.dim())


def test_index_is_the_documented_key_derivation(key):
    perm = ChannelPermutation(16, key, 'backbone.layer1:output')
    expected = key.permutation('channel/backbone.layer1:output/c=16', 16)
    assert perm.index.tolist() == expected.tolist()
    assert sorted(perm.index.tolist()) == list(range(16))


def test_index_is_pinned_for_a_fixed_key(seed_key):
    # A change here would make every trained model unusable with its own key.
    assert channel_permutation_index(seed_key, 'backbone.layer1:output', 8).tolist() == \
        [2, 1, 4, 5, 3, 7, 0, 6]
    assert channel_permutation_index(seed_key, 'decode_head.conv_seg:input', 8).tolist() == \
        [1, 6, 7, 0, 5, 2, 4, 3]


@pytest.mark.parametrize('shape, channel_dim', [((2, 8, 5, 3), 1), ((2, 7, 8), -1), ((3, 8), 1)])
def test_matches_naive_reference(key, shape, channel_dim):
    x = torch.randn(shape)
    perm = ChannelPermutation(8, key, 'p', channel_dim=channel_dim)
    expected = naive_permute(x, perm.index.tolist(), channel_dim)
    assert torch.equal(perm(x), expected)


def test_spatially_invariant(key):
    x = torch.randn(1, 6, 4, 4)
    perm = ChannelPermutation(6, key, 'p')
    shifted = torch.roll(x, shifts=(1, 2), dims=(2, 3))
    assert torch.equal(perm(shifted), torch.roll(perm(x), shifts=(1, 2), dims=(2, 3)))


def test_conditions(key, other_key):
    x = torch.randn(2, 32, 3, 3)
    perm = ChannelPermutation(32, key, 'p')
    assert isinstance(perm, KeyedComponent) and perm.key_condition == 'correct'
    correct = perm(x)
    perm.use_key(None)
    assert perm.key_condition == 'plain' and perm(x) is x
    perm.use_key(other_key)
    assert perm.key_condition == 'incorrect'
    incorrect = perm(x)
    assert not torch.equal(incorrect, correct) and not torch.equal(incorrect, x)
    assert torch.equal(incorrect, x[:, channel_permutation_index(other_key, 'p', 32)])
    perm.use_correct_key()
    assert torch.equal(perm(x), correct)


def test_purposes_and_sizes_give_independent_permutations(key):
    a = ChannelPermutation(64, key, 'backbone.layer2:output').index
    b = ChannelPermutation(64, key, 'decode_head.conv_seg:input').index
    c = ChannelPermutation(64, key, 'backbone.layer2:output').index
    assert not torch.equal(a, b)
    assert torch.equal(a, c)


def test_index_never_in_state_dict_but_moves_with_module(key):
    perm = ChannelPermutation(8, key, 'p')
    assert perm.state_dict() == {}
    assert 'index' in dict(perm.named_buffers())
    assert perm.to(torch.float64).index.dtype == torch.int64


def test_gradient_is_inverse_permutation(key):
    x = torch.randn(1, 5, 2, 2, requires_grad=True)
    perm = ChannelPermutation(5, key, 'p')
    weights = torch.arange(5.).view(1, 5, 1, 1)
    (perm(x) * weights).sum().backward()
    expected = torch.empty(5)
    expected[perm.index] = torch.arange(5.)
    assert torch.equal(x.grad[0, :, 0, 0], expected)


def test_lazy_channel_count(key):
    perm = ChannelPermutation(None, key, 'p')
    assert perm.index is None
    x = torch.randn(1, 12, 2, 2)
    assert torch.equal(perm(x), x[:, channel_permutation_index(key, 'p', 12)])
    assert perm.num_channels == 12
    with pytest.raises(ValueError, match='expected 12 channels.*got 6'):
        perm(torch.randn(1, 6, 2, 2))


def test_lazy_channel_count_when_plain_first(key):
    perm = ChannelPermutation(None, key, 'p')
    perm.use_key(None)
    x = torch.randn(1, 4, 2, 2)
    assert perm(x) is x
    perm.use_correct_key()
    assert torch.equal(perm(x), x[:, channel_permutation_index(key, 'p', 4)])


@pytest.mark.parametrize('shape, channel_dim, message', [
    ((1, 6, 2, 2), 1, r"expected 8 channels on axis 1, got 6 \(input of shape \(1, 6, 2, 2\)\)"),
    ((1, 2, 9), -1, r'expected 8 channels on axis -1, got 9'),
    ((8, ), 1, r'input of shape \(8,\) has no channel axis 1'),
])
def test_bad_input_names_shape_and_counts(key, shape, channel_dim, message):
    perm = ChannelPermutation(8, key, 'backbone.layer1:output', channel_dim=channel_dim)
    with pytest.raises(ValueError, match=message) as info:
        perm(torch.randn(shape))
    assert 'backbone.layer1:output' in str(info.value)


def test_non_tensor_input(key):
    with pytest.raises(TypeError, match='expects a tensor, got list'):
        ChannelPermutation(2, key, 'p')([torch.zeros(1, 2)])


@pytest.mark.parametrize('kwargs, error, message', [
    (dict(num_channels=0), ValueError, 'num_channels'),
    (dict(num_channels=True), ValueError, 'num_channels'),
    (dict(purpose=''), ValueError, 'purpose'),
    (dict(channel_dim=1.0), ValueError, 'channel_dim'),
    (dict(key=None), ValueError, 'needs a key'),
    (dict(key='00' * 32), ValueError, 'not as a literal'),
    (dict(key=dict(env='KP_TEST_UNSET_VARIABLE')), KeyError, 'KP_TEST_UNSET_VARIABLE'),
])
def test_bad_arguments(key, monkeypatch, kwargs, error, message):
    monkeypatch.delenv('KP_TEST_UNSET_VARIABLE', raising=False)
    args = dict(num_channels=4, key=key, purpose='p')
    args.update(kwargs)
    with pytest.raises(error, match=message):
        ChannelPermutation(**args)


def test_repr_shows_fingerprint_only(key):
    perm = ChannelPermutation(16, key, 'p')
    text = repr(perm)
    assert key.fingerprint in text
    assert key.export_hex() not in text
    assert str(perm.index.tolist()) not in text and 'index' not in text


def test_built_from_registry_with_key_source(key, key_file):
    perm = MODELS.build(dict(type='ChannelPermutation', num_channels=8,
                             key=dict(file=str(key_file)), purpose='p'))
    assert perm.correct_key == key
    assert torch.equal(perm.index, channel_permutation_index(key, 'p', 8))


def test_pickle_and_deepcopy_keep_behaviour(key_file):
    key = SecretKey.from_file(key_file)
    perm = ChannelPermutation(8, key, 'p')
    x = torch.randn(1, 8, 2, 2)
    perm(x)
    data = pickle.dumps(perm)
    # neither the key nor the derived index travels in the pickle
    assert bytes.fromhex(key.export_hex()) not in data
    assert perm.index.numpy().tobytes() not in data
    for clone in (pickle.loads(data), copy.deepcopy(perm)):
        assert torch.equal(clone(x), perm(x))
        assert clone.correct_key == key and isinstance(clone.correct_key, SecretKey)


def test_index_made_under_inference_mode_still_trains(key):
    perm = ChannelPermutation(None, key, 'p')
    with torch.inference_mode():
        perm(torch.randn(1, 4, 2, 2))
        perm.use_key(None)
        perm.use_correct_key()
    x = torch.randn(1, 4, 2, 2, requires_grad=True)
    perm(x).sum().backward()
    assert torch.equal(x.grad, torch.ones_like(x))
