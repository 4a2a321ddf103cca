"""Split an HxWxC image into MxM blocks and back.

A block is flattened to a vector of ``M*M*C`` values in (row, column, channel)
order, as in the block-wise transformation of the papers. Every block cipher
applies one keyed operation to that vector in every block. Instead of looping
over blocks, the ciphers turn the per-block operation into a whole-image table
(a gather index or a tiled mask) once per image shape and then apply it with a
single vectorised numpy call.
"""
from __future__ import annotations

from typing import Sequence, Tuple

import numpy as np

__all__ = ['check_block_shape', 'to_blocks', 'from_blocks', 'tile_over_blocks', 'gather_index']

Shape = Tuple[int, int, int]


def check_block_shape(shape: Sequence[int], block_size: int, what: str = 'image') -> Shape:
    """Check that an ``(H, W, C)`` shape can be cut into ``block_size`` blocks.

    Args:
        shape: ``(H, W)`` or ``(H, W, C)``.
        block_size: the block side ``M``.
        what: the name used in the error message.

    Returns:
        tuple: ``(H, W, C)`` (``C == 1`` for a 2-D shape).

    Raises:
        ValueError: naming the shape and block size when ``M < 1`` or ``M``
            does not divide both H and W.
    """
    if isinstance(block_size, bool) or not isinstance(block_size, (int, np.integer)) \
            or block_size < 1:
        raise ValueError(f'block_size must be an integer >= 1, got {block_size!r}')
    if len(shape) == 2:
        shape = (*shape, 1)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f'{what} must have shape (H, W) or (H, W, C) with C >= 1, '
                         f'got shape {tuple(shape)}')
    h, w, c = (int(s) for s in shape)
    if h % block_size or w % block_size:
        raise ValueError(
            f'{what} of shape {tuple(shape)} cannot be cut into {block_size}x{block_size} '
            f'blocks: height {h} and width {w} must both be multiples of '
            f'block_size={block_size} (resize, crop or pad to a multiple first)')
    return h, w, c


def to_blocks(x: np.ndarray, block_size: int) -> np.ndarray:
    """``(H, W, C)`` -> ``(H/M, W/M, M*M*C)``: one flattened vector per block."""
    h, w, c = x.shape
    m = block_size
    return x.reshape(h // m, m, w // m, m, c).transpose(0, 2, 1, 3, 4).reshape(
        h // m, w // m, m * m * c)


def from_blocks(blocks: np.ndarray, shape: Shape, block_size: int) -> np.ndarray:
    """Inverse of :func:`to_blocks`: ``(H/M, W/M, M*M*C)`` -> ``(H, W, C)``."""
    h, w, c = shape
    m = block_size
    return blocks.reshape(h // m, w // m, m, m, c).transpose(0, 2, 1, 3, 4).reshape(h, w, c)


def tile_over_blocks(values: np.ndarray, shape: Shape, block_size: int) -> np.ndarray:
    """Place the per-block vector ``values`` (length ``M*M*C``) in every block.

    Returns:
        np.ndarray: an ``(H, W, C)`` array, e.g. a whole-image mask.
    """
    h, w, c = shape
    m = block_size
    per_block = np.broadcast_to(values, (h // m, w // m, m * m * c))
    return np.ascontiguousarray(from_blocks(per_block, shape, block_size))


def gather_index(perm: np.ndarray, shape: Shape, block_size: int) -> np.ndarray:
    """Flat index that applies ``perm`` inside every block with one gather.

    ``out.ravel() == img.ravel()[index]`` equals, block by block,
    ``out_block = in_block[perm]``.

    Returns:
        np.ndarray: a flat int32 (or int64 for huge images) index of length ``H*W*C``.
    """
    size = int(np.prod(shape))
    dtype = np.int32 if size < 2**31 else np.int64
    flat = np.arange(size, dtype=dtype).reshape(shape)
    return np.ascontiguousarray(
        from_blocks(to_blocks(flat, block_size)[..., perm], shape, block_size)).reshape(-1)
