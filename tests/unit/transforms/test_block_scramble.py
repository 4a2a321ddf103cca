"""BlockScramble: whole blocks change places by a keyed order, then an optional per-block cipher."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmseg.registry import TRANSFORMS

from mmseg_keyprotect.models import BatchedBlockCipher
from mmseg_keyprotect.transforms import BlockScramble
from mmseg_keyprotect.transforms.block_scramble import block_scramble_index
from mmseg_keyprotect.transforms.blocks import to_blocks


def random_image(shape=(12, 16, 3), seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def test_blocks_move_whole_to_the_keyed_positions(key):
    img = random_image()
    out = BlockScramble(block_size=4, key=key)(dict(img=img.copy()))['img']
    order = block_scramble_index(key, 4, (3, 4))
    assert sorted(order.tolist()) == list(range(12)) and not np.array_equal(order,
                                                                            np.arange(12))
    plain, scrambled = to_blocks(img, 4).reshape(12, -1), to_blocks(out, 4).reshape(12, -1)
    assert np.array_equal(scrambled, plain[order])


def test_other_keys_and_grids_give_other_orders(key, other_key):
    assert not np.array_equal(block_scramble_index(key, 4, (4, 4)),
                              block_scramble_index(other_key, 4, (4, 4)))
    assert not np.array_equal(block_scramble_index(key, 4, (4, 4)),
                              block_scramble_index(key, 8, (4, 4)))
    scramble = BlockScramble(block_size=4, key=key)
    assert scramble.derived_tables(key) != scramble.derived_tables(other_key)


@pytest.mark.parametrize('inner', ['BlockShuffle', 'BlockNegPos', 'BlockFFX'])
def test_inner_cipher_runs_after_the_scrambling_with_the_same_key(inner, key, other_key):
    img = random_image()
    combined = BlockScramble(block_size=4, key=key, inner=inner)
    alone = BlockScramble(block_size=4, key=key)
    cipher = TRANSFORMS.build(dict(type=inner, block_size=4, key=key))
    for k in (key, other_key):
        assert np.array_equal(combined.encrypt(img, k), cipher.encrypt(alone.encrypt(img, k), k))
    assert combined.describe()['inner'] == inner and alone.describe()['inner'] is None


@pytest.mark.parametrize('inner', [None, 'BlockShuffle', 'BlockNegPos', 'BlockFFX'])
def test_batched_kernel_equals_the_pipeline_transform(inner, key):
    cipher = BlockScramble(block_size=4, key=key, inner=inner)
    imgs = [random_image(seed=s) for s in range(3)]
    batch = torch.from_numpy(np.stack(imgs).transpose(0, 3, 1, 2).copy())
    got = BatchedBlockCipher(cipher).encrypt(batch, key).numpy().transpose(0, 2, 3, 1)
    assert np.array_equal(got, np.stack([cipher.encrypt(i) for i in imgs]))


def test_unknown_inner_cipher_is_refused_in_one_line(key):
    with pytest.raises(ValueError, match=r"inner must be None or one of .*'BlockRot'") as error:
        BlockScramble(block_size=4, key=key, inner='BlockRot')
    assert '\n' not in str(error.value)


def test_repr_shows_no_key(key):
    text = repr(BlockScramble(block_size=4, key=key, inner='BlockShuffle'))
    assert key.export_hex() not in text and "inner='BlockShuffle'" in text
