"""The block ciphers applied to a whole ``(N, C, H, W)`` batch in torch, on the batch's device.

:class:`BatchedBlockCipher` wraps a pipeline cipher
(:class:`~mmseg_keyprotect.transforms.BlockShuffle`, ``BlockNegPos``,
``BlockFFX`` or ``BlockScramble``) and applies *its* tables: the gather index, XOR pattern or FFX
lookup that the numpy transform builds for a key and an ``(H, W, C)`` shape
(:meth:`~mmseg_keyprotect.transforms.block_cipher.BlockCipher.tables`) is
re-laid out once from HxWxC to CxHxW and moved to the batch's device, then
every batch costs one vectorised torch call. Nothing is derived from the key a
second way, so the result equals the pipeline transform's bit for bit (SHF,
NP; FFX gathers from the same float32 table, so it is exact too) for the
same key.

Example:
    >>> cipher = BatchedBlockCipher(BlockShuffle(block_size=4, key=key))  # doctest: +SKIP
    >>> enc = cipher.encrypt(batch_uint8_nchw, key)  # same device and dtype as the batch
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import numpy as np
import torch

from ..keys import SecretKey
from ..transforms.block_cipher import BlockCipher, BlockFFX, BlockNegPos, BlockShuffle
from ..transforms.block_scramble import BlockScramble
from ..transforms.blocks import Shape, check_block_shape

__all__ = ['BatchedBlockCipher', 'hwc_to_chw_index']

_CACHE_SIZE = 8
_DTYPES = {np.dtype(np.uint8): torch.uint8, np.dtype(np.float32): torch.float32,
           np.dtype(np.float64): torch.float64}


def hwc_to_chw_index(index: np.ndarray, shape: Shape) -> np.ndarray:
    """Turn a flat HxWxC gather index into the equivalent flat CxHxW one.

    ``out_hwc.ravel() == img_hwc.ravel()[index]`` becomes
    ``out_chw.ravel() == img_chw.ravel()[result]`` for the same image.

    Args:
        index: a flat gather index of length ``H*W*C`` over an HxWxC image.
        shape: ``(H, W, C)``.

    Returns:
        np.ndarray: int64 index of length ``H*W*C`` over the CxHxW image.
    """
    h, w, c = shape
    src = index.astype(np.int64).reshape(h, w, c)
    src_h, rest = np.divmod(src, w * c)
    src_w, src_c = np.divmod(rest, c)
    chw = src_c * (h * w) + src_h * w + src_w
    return np.ascontiguousarray(chw.transpose(2, 0, 1)).reshape(-1)


def _chw(table: np.ndarray, shape: Shape) -> np.ndarray:
    """An HxWxC per-pixel table (any flat or 3-D layout) as a contiguous CxHxW array."""
    return np.ascontiguousarray(table.reshape(shape).transpose(2, 0, 1))


def _shf_tables(cipher: BlockShuffle, key: SecretKey, shape: Shape,
                device: torch.device) -> torch.Tensor:
    index = hwc_to_chw_index(cipher.tables(key, shape), shape)
    return torch.from_numpy(index).to(device)


def _shf_apply(x: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    n = x.shape[0]
    return x.reshape(n, -1).index_select(1, index).reshape(x.shape)


def _np_tables(cipher: BlockNegPos, key: SecretKey, shape: Shape,
               device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    mask, xor_pattern = cipher.tables(key, shape)
    return (torch.from_numpy(_chw(mask, shape)).to(device),
            torch.from_numpy(_chw(xor_pattern, shape)).to(device))


def _np_apply(x: torch.Tensor, tables: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    mask, xor_pattern = tables
    if x.dtype == torch.uint8:
        return torch.bitwise_xor(x, xor_pattern)  # 255 - v == v ^ 255 for uint8
    return torch.where(mask, 255 - x, x)


def _ffx_tables(cipher: BlockFFX, key: SecretKey, shape: Shape,
                device: torch.device) -> Tuple[torch.Tensor, torch.Tensor]:
    table, offset = cipher.tables(key, shape)
    return (torch.from_numpy(np.ascontiguousarray(table)).to(device),
            torch.from_numpy(_chw(offset.astype(np.int16), shape)).to(device))


def _ffx_apply(x: torch.Tensor, tables: Tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    table, offset = tables
    # int16 add (v + 256 * selected < 512), then one gather; ~3x faster than int64 indexing.
    index = (x.to(torch.int16) + offset).reshape(-1).int()
    return table.index_select(0, index).reshape(x.shape)


def _scramble_tables(cipher: BlockScramble, key: SecretKey, shape: Shape,
                     device: torch.device) -> Tuple[torch.Tensor, Any, Any]:
    # the scrambling is a gather index like SHF's; then the inner cipher's own kernel
    index = _shf_tables(cipher, key, shape, device)
    if cipher.inner is None:
        return index, None, None
    build, apply = _kernel(cipher.inner)
    return index, apply, build(cipher.inner, key, shape, device)


def _scramble_apply(x: torch.Tensor, tables: Tuple[torch.Tensor, Any, Any]) -> torch.Tensor:
    index, inner_apply, inner_tables = tables
    x = _shf_apply(x, index)
    return x if inner_apply is None else inner_apply(x, inner_tables)


# cipher class -> (build device tables, apply them to an (N, C, H, W) batch)
_KERNELS: Dict[type, Tuple[Callable[..., Any], Callable[[torch.Tensor, Any], torch.Tensor]]] = {
    BlockShuffle: (_shf_tables, _shf_apply),
    BlockNegPos: (_np_tables, _np_apply),
    BlockFFX: (_ffx_tables, _ffx_apply),
    BlockScramble: (_scramble_tables, _scramble_apply),
}


def _kernel(cipher: BlockCipher) -> Optional[Tuple[Callable[..., Any], Callable[..., Any]]]:
    """The (build, apply) kernel of ``cipher``'s class, or None."""
    return next((k for cls, k in _KERNELS.items() if isinstance(cipher, cls)), None)


class BatchedBlockCipher:
    """A pipeline block cipher applied to ``(N, C, H, W)`` torch batches.

    Args:
        cipher (BlockCipher): a ``BlockShuffle``, ``BlockNegPos`` or
            ``BlockFFX`` (or a subclass); its block size, channel and dtype
            rules and its key-derived tables are used as they are.

    Raises:
        TypeError: for a cipher without a torch kernel.
    """

    def __init__(self, cipher: BlockCipher) -> None:
        kernel = _kernel(cipher)
        if kernel is None:
            raise TypeError(f'no batched torch kernel for {type(cipher).__name__}; '
                            f'supported: {", ".join(c.__name__ for c in _KERNELS)}')
        self.cipher = cipher
        self._build, self._apply = kernel
        self._tables: 'OrderedDict[Hashable, Any]' = OrderedDict()

    def check_batch(self, x: torch.Tensor, what: str = 'batch') -> Shape:
        """Validate an ``(N, C, H, W)`` batch as the pipeline cipher validates an image.

        Returns:
            tuple: the per-image ``(H, W, C)`` shape.

        Raises:
            ValueError: naming the shape, dtype and block size of a bad batch.
        """
        name = type(self.cipher).__name__
        if not isinstance(x, torch.Tensor) or x.ndim != 4:
            raise ValueError(f'{name}: expected an (N, C, H, W) tensor, got '
                             f'{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}')
        n, c, h, w = x.shape
        m = self.cipher.block_size
        shape = check_block_shape((h, w, c), m,
                                  what=f'{name}: {what} (N, C, H, W)={tuple(x.shape)}, image')
        if self.cipher.num_channels is not None and c != self.cipher.num_channels:
            raise ValueError(f'{name}: {what} of shape {tuple(x.shape)} has {c} channel(s), '
                             f'but num_channels={self.cipher.num_channels} (block_size={m})')
        allowed = [_DTYPES[d] for d in self.cipher.dtypes]
        if x.dtype not in allowed:
            raise ValueError(
                f'{name}: unsupported dtype {x.dtype} for a {what} of shape {tuple(x.shape)} '
                f'(block_size={m}); supported: {", ".join(str(d) for d in allowed)}')
        if x.is_floating_point() and x.numel() and (x.min() < 0 or x.max() > 255):
            raise ValueError(f'{name}: float {what} of shape {tuple(x.shape)} has values in '
                             f'[{float(x.min()):g}, {float(x.max()):g}]; expected 0..255')
        return shape

    def encrypt(self, x: torch.Tensor, key: SecretKey) -> torch.Tensor:
        """Encrypt every image of ``x`` with ``key``, on ``x``'s device.

        Args:
            x: an ``(N, C, H, W)`` batch in the channel order the pipeline
                cipher would see (BGR as loaded by mmcv), uint8 (or float in
                0..255 for SHF/NP).
            key: the key.

        Returns:
            torch.Tensor: same shape and device; the dtype the pipeline cipher
            returns (FFX: float32).
        """
        shape = self.check_batch(x)
        return self._apply(x, self.device_tables(key, shape, x.device))

    def device_tables(self, key: SecretKey, shape: Shape, device: torch.device) -> Any:
        """The cipher's tables for ``key`` and ``shape``, in CxHxW layout on ``device``."""
        cache_key = (key.fingerprint, tuple(shape), str(device))
        if cache_key in self._tables:
            self._tables.move_to_end(cache_key)
            return self._tables[cache_key]
        tables = self._build(self.cipher, key, tuple(shape), device)
        self._tables[cache_key] = tables
        if len(self._tables) > _CACHE_SIZE:
            self._tables.popitem(last=False)
        return tables

    def __getstate__(self) -> Dict[str, Any]:
        # Device tables are derived data: rebuild them where they are used.
        state = self.__dict__.copy()
        state['_tables'] = OrderedDict()
        return state

    def __repr__(self) -> str:
        return f'{type(self).__name__}({self.cipher!r})'
