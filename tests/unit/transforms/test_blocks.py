"""Tests for the block split/merge helpers."""
import numpy as np
import pytest

from mmseg_keyprotect.transforms.blocks import (check_block_shape, from_blocks, gather_index,
                                                tile_over_blocks, to_blocks)


def test_to_blocks_flattens_row_col_channel_order():
    img = np.arange(4 * 6 * 2).reshape(4, 6, 2)
    blocks = to_blocks(img, 2)
    assert blocks.shape == (2, 3, 8)
    np.testing.assert_array_equal(blocks[1, 2], img[2:4, 4:6, :].reshape(-1))
    np.testing.assert_array_equal(from_blocks(blocks, img.shape, 2), img)


def test_tile_over_blocks_repeats_the_vector():
    values = np.arange(8)
    tiled = tile_over_blocks(values, (4, 4, 2), 2)
    for i in (0, 2):
        for j in (0, 2):
            np.testing.assert_array_equal(tiled[i:i + 2, j:j + 2].reshape(-1), values)


def test_gather_index_applies_the_permutation_in_every_block():
    img = np.random.default_rng(0).integers(0, 100, (4, 8, 3))
    perm = np.random.default_rng(1).permutation(12)
    out = img.reshape(-1)[gather_index(perm, img.shape, 2)].reshape(img.shape)
    np.testing.assert_array_equal(to_blocks(out, 2), to_blocks(img, 2)[..., perm])


def test_check_block_shape():
    assert check_block_shape((8, 4), 2) == (8, 4, 1)
    with pytest.raises(ValueError, match=r'shape \(8, 5, 3\).*block_size=2'):
        check_block_shape((8, 5, 3), 2)
    with pytest.raises(ValueError, match=r'got shape \(8, 8, 0\)'):
        check_block_shape((8, 8, 0), 2)
    with pytest.raises(ValueError, match=r'got shape \(2, 2, 2, 2\)'):
        check_block_shape((2, 2, 2, 2), 2)
