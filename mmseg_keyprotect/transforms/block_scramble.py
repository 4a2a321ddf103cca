"""Block scrambling: a keyed permutation of the positions of whole MxM blocks.

The block-scrambling transformation of Kiya et al. ("Image and Model
Transformation with Secret Key for Vision Transformer", 2022): the image is cut
into MxM blocks and the blocks change places by one keyed permutation of the
block grid; the values inside a block are kept, or then encrypted by a
per-block cipher (``inner``: SHF, NP or FFX with the same key), as the papers
combine them.

Unlike the per-block ciphers it moves image content across the image, so the
label map no longer lines up with the scrambled image: it is meant for the
post-hoc protection of a ViT whose position embedding is permuted to match
and whose backbone outputs are put back in block order by the model
(:mod:`mmseg_keyprotect.models.block_unscramble`), not for training a CNN on
scrambled images. The permutation depends on the block grid
(``H/M x W/M``): the model is exact only at the grid it was transformed for.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import numpy as np
from mmseg.registry import TRANSFORMS

from ..keys import KeySpec, SecretKey
from .block_cipher import BlockCipher
from .blocks import Shape, from_blocks, to_blocks

__all__ = ['BlockScramble', 'block_scramble_index', 'INNER_CIPHERS']

#: The per-block ciphers that may follow the scrambling.
INNER_CIPHERS = ('BlockShuffle', 'BlockNegPos', 'BlockFFX')
#: The grid of :meth:`BlockScramble.derived_tables` (incorrect keys are drawn distinct on it).
_TABLE_GRID = (8, 8)


def block_scramble_index(key: SecretKey, block_size: int, grid: Tuple[int, int]) -> np.ndarray:
    """The keyed block order: encrypted block ``i`` (raster order) is plain block ``index[i]``.

    Args:
        key: the key.
        block_size: the block side M (part of the purpose: other sizes, other orders).
        grid: ``(H/M, W/M)``, the number of block rows and columns.

    Returns:
        np.ndarray: int64 permutation of ``range(H/M * W/M)``.
    """
    rows, cols = (int(g) for g in grid)
    return key.permutation(f'scramble/block={block_size}/grid={rows}x{cols}', rows * cols)


@TRANSFORMS.register_module()
class BlockScramble(BlockCipher):
    """Move whole MxM blocks to keyed positions, then (optionally) encrypt each block.

    Args:
        block_size (int): the block side M; must divide the image height and width.
        key (SecretKey | dict): the secret key or its source.
        num_channels (int, optional): if set, images must have exactly this many channels.
        inner (str, optional): a per-block cipher applied after the scrambling,
            with the same key and block size: ``'BlockShuffle'``,
            ``'BlockNegPos'`` or ``'BlockFFX'``. Defaults to None (blocks kept).

    Raises:
        ValueError: an unknown ``inner`` cipher.

    Example:
        >>> t = BlockScramble(block_size=4, key=SecretKey.generate(), inner='BlockShuffle')
        >>> img = np.random.randint(0, 256, (8, 8, 3), np.uint8)
        >>> t(dict(img=img))['img'].shape
        (8, 8, 3)
    """

    cipher_name = 'scramble'
    dtypes = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))

    def __init__(self,
                 block_size: int,
                 key: KeySpec = None,
                 num_channels: Optional[int] = None,
                 inner: Optional[str] = None) -> None:
        super().__init__(block_size=block_size, key=key, num_channels=num_channels)
        if inner is not None and inner not in INNER_CIPHERS:
            raise ValueError(f'BlockScramble: inner must be None or one of {INNER_CIPHERS}, '
                             f'got {inner!r}')
        self.inner: Optional[BlockCipher] = None if inner is None else TRANSFORMS.build(
            dict(type=inner, block_size=self.block_size, key=self.correct_key,
                 num_channels=num_channels))
        if self.inner is not None:
            self.dtypes = self.inner.dtypes

    def encrypt(self, img: np.ndarray, key: Optional[SecretKey] = None) -> np.ndarray:
        """Scramble the blocks of one image with ``key`` (default: the correct key), then
        encrypt each block with the inner cipher under the same key."""
        scrambled = super().encrypt(img, key)
        return scrambled if self.inner is None else self.inner.encrypt(scrambled, key)

    def _build(self, key: SecretKey, shape: Shape) -> np.ndarray:
        """The whole-image gather index of the scrambling (the inner cipher keeps its own)."""
        h, w, _ = shape
        m = self.block_size
        size = int(np.prod(shape))
        flat = np.arange(size, dtype=np.int32 if size < 2**31 else np.int64).reshape(shape)
        blocks = to_blocks(flat, m)
        order = block_scramble_index(key, m, (h // m, w // m))
        moved = blocks.reshape(-1, blocks.shape[-1])[order].reshape(blocks.shape)
        return np.ascontiguousarray(from_blocks(moved, shape, m)).reshape(-1)

    def _apply(self, img: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.take(img.reshape(-1), index)

    def derived_tables(self, key: SecretKey) -> bytes:
        """The block order of an 8x8 block grid, and the inner cipher's per-block tables."""
        order = block_scramble_index(key, self.block_size, _TABLE_GRID).tobytes()
        return order + (b'' if self.inner is None else self.inner.derived_tables(key))

    def describe(self) -> Dict[str, Any]:
        """``{'type': 'BlockScramble', 'block_size': M, 'inner': NAME, 'key': FINGERPRINT}``."""
        return {**super().describe(),
                'inner': None if self.inner is None else type(self.inner).__name__}

    def _extra_repr(self) -> str:
        return f', inner={None if self.inner is None else type(self.inner).__name__!r}'
