"""Tests for KeyCondition, make_conditions, and Protection.parts / Protection.applied."""
from __future__ import annotations

import pytest
import torch
from mmengine.dataset import Compose
from torch import nn

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import ChannelPermutation
from mmseg_keyprotect.transforms import BlockNegPos, BlockShuffle
from mmseg_keyprotect.protection.conditions import KeyCondition, make_conditions
from mmseg_keyprotect.protection import Protection


class TinyDataset(torch.utils.data.Dataset):

    def __init__(self, pipeline):
        self.pipeline = Compose(pipeline)

    def __len__(self):
        return 1

    def __getitem__(self, i):
        return self.pipeline(dict(img=None))


def make_targets(key):
    model = nn.Sequential(nn.Conv2d(3, 4, 1), ChannelPermutation(4, key, 'a'),
                          nn.Sequential(ChannelPermutation(4, key, 'b')))
    shf = BlockShuffle(block_size=2, key=key)
    negpos = BlockNegPos(block_size=2, key=key)
    loader = torch.utils.data.DataLoader(TinyDataset([shf, dict(type='PackSegInputs'), negpos]))
    return model, loader, [model[1], model[2][0], shf, negpos]


def test_make_conditions_order_and_distinct_incorrect_keys(key):
    conds = make_conditions(incorrect=100, seed=3)
    assert [c.kind for c in conds[:2]] == ['correct', 'plain']
    assert len(conds) == 102
    keys = [c.key for c in conds[2:]]
    assert len({k.fingerprint for k in keys}) == 100
    assert all(k != key for k in keys)
    assert [c.label for c in conds[2:4]] == ['incorrect/000', 'incorrect/001']
    same = make_conditions(incorrect=100, seed=3)
    assert [c.key for c in same[2:]] == keys
    assert make_conditions(incorrect=1, seed=4)[2].key != keys[0]
    assert [c.kind for c in make_conditions(correct=False, plain=False, incorrect=2)] == [
        'incorrect', 'incorrect']


@pytest.mark.parametrize('kwargs, match', [
    (dict(correct=False, plain=False, incorrect=0), 'no key condition'),
    (dict(incorrect=-1), 'non-negative'),
    (dict(incorrect=2.5), 'non-negative'),
])
def test_make_conditions_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        make_conditions(**kwargs)


def test_condition_validation(key):
    with pytest.raises(ValueError, match="kind must be"):
        KeyCondition('wrong')
    with pytest.raises(ValueError, match='needs a key'):
        KeyCondition('incorrect')
    with pytest.raises(ValueError, match='take none'):
        KeyCondition('plain', key)


def test_incorrect_key_equal_to_correct_is_refused(key):
    perm = ChannelPermutation(4, key, 'a')
    with pytest.raises(ValueError, match='equals the correct key'):
        KeyCondition.incorrect(key).key_for(perm)


def test_find_keyed_components_walks_models_loaders_pipelines(key):
    model, loader, expected = make_targets(key)
    found = Protection.of(model, loader, model).parts
    assert [id(c) for c in found] == [id(c) for c in expected]


def test_key_condition_switches_and_restores(key):
    model, loader, components = make_targets(key)
    wrong = SecretKey.generate()
    components[2].use_key(None)  # a non-default state must also come back
    before = [c.active_key for c in components]
    with Protection.of(model, loader).applied(KeyCondition.incorrect(wrong)) as switched:
        assert len(switched) == 4
        assert all(c.active_key == wrong for c in components)
    assert [c.active_key for c in components] == before
    with Protection.of(model, loader).applied(KeyCondition.plain()):
        assert all(c.active_key is None for c in components)
    with Protection.of(model, loader).applied(KeyCondition.correct()):
        assert all(c.active_key == key for c in components)
    assert [c.active_key for c in components] == before


def test_key_condition_restores_after_an_exception(key):
    model, loader, components = make_targets(key)
    with pytest.raises(RuntimeError, match='boom'):
        with Protection.of(model, loader).applied(KeyCondition.plain()):
            raise RuntimeError('boom')
    assert all(c.active_key == key for c in components)


def test_permutation_output_follows_the_condition(key):
    perm = ChannelPermutation(8, key, 'p')
    x = torch.arange(8.).view(1, 8, 1, 1)
    correct = perm(x)
    with Protection.of(perm).applied(KeyCondition.plain()):
        torch.testing.assert_close(perm(x), x)
    with Protection.of(perm).applied(KeyCondition.incorrect(SecretKey.generate())):
        assert not torch.equal(perm(x), correct)
    torch.testing.assert_close(perm(x), correct)


def _masks(cipher, keys):
    return [cipher.tables(k, (2, 2, 3))[0].tobytes() for k in keys]


def test_incorrect_keys_derive_distinct_np_masks(key):
    """NP with 2x2x3 blocks has only C(12, 6) = 924 masks: byte-distinct keys collide."""
    from mmseg_keyprotect.protection.conditions import draw_incorrect_keys
    negpos = BlockNegPos(block_size=2, key=key, num_channels=3)
    unchecked, rejected = draw_incorrect_keys(100, seed=0)
    assert rejected == 0
    masks = _masks(negpos, [key] + unchecked)
    assert len(set(masks)) < len(masks)  # without the check, some masks repeat
    keys, rejected = draw_incorrect_keys(100, seed=0, components=[negpos])
    masks = _masks(negpos, [key] + keys)
    assert len(keys) == 100 and len(set(masks)) == 101
    assert rejected > 0
    # the keys kept are the same draws with the duplicates left out, in order
    raw, _ = draw_incorrect_keys(100 + rejected, seed=0)
    seen, expected = {_masks(negpos, [key])[0]}, []
    for candidate, mask in zip(raw, _masks(negpos, raw)):
        if mask not in seen:
            seen.add(mask)
            expected.append(candidate)
    assert keys == expected


def test_incorrect_keys_differ_for_every_component(key):
    from mmseg_keyprotect.protection.conditions import draw_incorrect_keys
    from mmseg_keyprotect.transforms import BlockFFX
    components = [ChannelPermutation(3, key, 'point'),  # 3! = 6 orders
                  BlockFFX(block_size=2, key=key, num_channels=1, mode='paper')]
    keys, rejected = draw_incorrect_keys(5, seed=1, components=components)
    assert rejected > 0
    for component in components:
        tables = [component.derived_tables(k) for k in [key] + keys]
        assert len(set(tables)) == 6
    with pytest.raises(ValueError, match='too small'):
        draw_incorrect_keys(6, seed=1, components=components[:1])


def test_ffx_tables_compared_include_the_lookup_only_in_keyed_mode(key, other_key):
    from mmseg_keyprotect.transforms import BlockFFX
    paper = BlockFFX(block_size=1, key=key, num_channels=1, mode='paper')
    keyed = BlockFFX(block_size=1, key=key, num_channels=1)
    # one value per block, none selected (n // 2 == 0): paper mode derives nothing else
    assert paper.derived_tables(key) == paper.derived_tables(other_key)
    assert keyed.derived_tables(key) != keyed.derived_tables(other_key)


def test_lazily_sized_permutation_is_compared_by_key_only(key):
    lazy = ChannelPermutation(None, key, 'lazy')
    assert lazy.derived_tables(key) is None
    lazy(torch.zeros(1, 5, 2, 2))
    assert lazy.derived_tables(key) is not None


def test_make_conditions_with_components_rejects_the_correct_table(key):
    negpos = BlockNegPos(block_size=1, key=key, num_channels=1)  # one mask only
    with pytest.raises(ValueError, match='too small'):
        make_conditions(incorrect=1, components=[negpos])
