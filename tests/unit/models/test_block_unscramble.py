"""BlockUnscramble: a backbone's feature maps put back in the image's block order."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from mmseg_keyprotect.models.block_unscramble import BlockUnscramble
from mmseg_keyprotect.transforms import BlockScramble


def _token_map(img: np.ndarray, patch: int) -> torch.Tensor:
    """One token per patch: the patch's mean per channel, as an (1, C, rows, cols) map."""
    h, w, c = img.shape
    pooled = img.reshape(h // patch, patch, w // patch, patch, c).mean((1, 3))
    return torch.from_numpy(pooled.transpose(2, 0, 1)[None].copy())


def test_unscrambling_puts_the_tokens_of_a_scrambled_image_back(key, other_key):
    img = np.random.default_rng(0).integers(0, 256, (32, 48, 3), dtype=np.uint8)
    scrambled = BlockScramble(block_size=8, key=key).encrypt(img)
    unscramble = BlockUnscramble(key, block_size=8, grid=(4, 6))
    features = (_token_map(scrambled, 8), [_token_map(scrambled, 8), torch.ones(1, 3)])
    first, (second, cls_token) = unscramble(features)
    assert torch.equal(first, _token_map(img, 8)) and torch.equal(second, first)
    assert torch.equal(cls_token, torch.ones(1, 3))
    unscramble.use_key(other_key)
    assert not torch.equal(unscramble(features[0]), _token_map(img, 8))
    unscramble.use_key(None)  # plain: nothing moves
    assert torch.equal(unscramble(features[0]), features[0])


def test_nothing_is_stored_and_nothing_leaks(key):
    unscramble = BlockUnscramble(key, block_size=16, grid=(4, 4))
    assert unscramble.state_dict() == {}
    assert key.export_hex() not in repr(unscramble) + repr(unscramble.describe())
    assert unscramble.describe()['grid'] == '4x4'


def test_another_grid_is_refused_in_one_line(key):
    unscramble = BlockUnscramble(key, block_size=16, grid=(4, 4))
    with pytest.raises(ValueError, match=r'6x4 token grid.*scrambled for 4x4.*64x64') as error:
        unscramble(torch.zeros(1, 2, 6, 4))
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('grid', [(4, ), (0, 4), (4.0, 4), 'x'])
def test_a_bad_grid_is_refused(grid, key):
    with pytest.raises(ValueError, match='grid must be'):
        BlockUnscramble(key, block_size=16, grid=grid)
