"""tools/dev/ffx_mask_probe.py's masks and encryption (the probe itself needs trained models)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.transforms.block_cipher import BlockFFX
from mmseg_keyprotect.transforms.blocks import tile_over_blocks, to_blocks

REPO = Path(__file__).resolve().parents[4]
sys.path.insert(0, str(REPO / 'tools' / 'dev'))

import ffx_mask_probe  # noqa: E402


def test_a_mask_per_block_selects_half_of_every_block_differently():
    mask = ffx_mask_probe.mask_per_block((16, 24, 3), 8, seed=0)
    blocks = to_blocks(mask, 8).reshape(-1, 8 * 8 * 3)
    assert mask.shape == (16, 24, 3) and (blocks.sum(1) == 96).all()
    assert len({b.tobytes() for b in blocks}) == len(blocks)
    assert not np.array_equal(mask, ffx_mask_probe.mask_per_block((16, 24, 3), 8, seed=1))


def test_the_probe_encrypts_as_the_cipher_under_the_cipher_s_own_mask():
    key = SecretKey.generate()
    cipher = BlockFFX(block_size=4, key=key, mode='paper')
    img = np.random.default_rng(0).integers(0, 256, (8, 12, 3), dtype=np.uint8)
    own = tile_over_blocks(key.mask(cipher._purpose(img.shape), 48), img.shape, 4)
    lookup = cipher.tables(key, img.shape)[0]
    np.testing.assert_array_equal(ffx_mask_probe.encrypt_with_mask(lookup, img, own),
                                  cipher.encrypt(img))
    assert not np.array_equal(ffx_mask_probe.encrypt_with_mask(lookup, img, ~own),
                              cipher.encrypt(img))
