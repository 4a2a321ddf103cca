"""Block-wise image encryption with a secret key: SHF, NP and FFX.

The three transformations of "Protecting Semantic Segmentation Models by Using
Block-wise Image Encryption with Secret Key from Unauthorized Access": an image
is cut into MxM blocks, every block is flattened to ``M*M*C`` values in
(row, column, channel) order and transformed with the *same* keyed operation,
and the blocks are put back. Only ``results['img']`` changes; the label map
stays where it is.

Place a cipher after the geometric augmentation and before ``PackSegInputs``::

    train_pipeline = [
        dict(type='LoadImageFromFile'),
        dict(type='LoadAnnotations'),
        dict(type='RandomResize', scale=(256, 256), ratio_range=(0.5, 2.0), keep_ratio=True),
        dict(type='RandomCrop', crop_size=(256, 256)),
        dict(type='RandomFlip', prob=0.5),
        dict(type='BlockShuffle', block_size=4, key=dict(file='work_dirs/owner.key')),
        dict(type='PackSegInputs'),
    ]
"""
from __future__ import annotations

import functools
from collections import OrderedDict
from typing import Any, Callable, Dict, Hashable, Optional, Tuple

import numpy as np
import pyffx
from mmcv.transforms import BaseTransform
from mmseg.registry import TRANSFORMS

from ..keyed import ImageCipher
from ..protection import PipelineStep, keyed_type
from ..keys import KeySpec, SecretKey
from .blocks import Shape, check_block_shape, gather_index, tile_over_blocks

__all__ = ['BlockCipher', 'BlockShuffle', 'BlockNegPos', 'BlockFFX', 'ffx_lookup', 'FFX_MODES',
           'PAPER_PASSWORD']

_CACHE_SIZE = 8


@keyed_type(PipelineStep())
class BlockCipher(BaseTransform, ImageCipher):
    """Base class: a keyed operation applied identically to every MxM block.

    Subclasses set :attr:`cipher_name` and :attr:`dtypes` and implement
    :meth:`_build` (whole-image tables for one key and shape, built once and
    cached) and :meth:`_apply` (one vectorised call using those tables).

    Args:
        block_size (int): the block side M; must divide the image height and width.
        key (SecretKey | dict): the secret key or its source,
            ``dict(file=PATH)``, ``dict(env=NAME)`` or ``dict(seed=INT)``.
        num_channels (int, optional): if set, images must have exactly this
            many channels. Defaults to None (any C >= 1).
    """

    cipher_name: str = ''
    dtypes: Tuple[np.dtype, ...] = (np.dtype(np.uint8), )

    def __init__(self,
                 block_size: int,
                 key: KeySpec = None,
                 num_channels: Optional[int] = None) -> None:
        check_block_shape((block_size, block_size), block_size)
        if num_channels is not None and (isinstance(num_channels, bool) or
                                         not isinstance(num_channels, int) or num_channels < 1):
            raise ValueError(f'num_channels must be None or an integer >= 1, got {num_channels!r}')
        self.block_size = int(block_size)
        self.num_channels = num_channels
        self._init_key(key)
        self._tables: 'OrderedDict[Hashable, Any]' = OrderedDict()

    # ---------------------------------------------------------------- public
    def transform(self, results: Dict[str, Any]) -> Dict[str, Any]:
        """Encrypt ``results['img']`` with the active key (plain: leave it)."""
        img = results['img']
        self.check_image(img)
        if self.active_key is not None:
            results['img'] = self.encrypt(img, self.active_key)
        return results

    def encrypt(self, img: np.ndarray, key: Optional[SecretKey] = None) -> np.ndarray:
        """Encrypt one ``(H, W)`` or ``(H, W, C)`` image.

        Args:
            img: the image; see :attr:`dtypes` for the accepted dtypes.
            key: the key to use. Defaults to the correct key.

        Returns:
            np.ndarray: the encrypted image, same shape.
        """
        shape = self.check_image(img)
        key = self.correct_key if key is None else key
        return self._apply(img, self._cached(key, shape, 'enc', self._build)).reshape(img.shape)

    def tables(self, key: SecretKey, shape: Shape) -> Any:
        """The whole-image tables of ``key`` for ``(H, W, C)`` images, built once and cached.

        They are what :meth:`encrypt` applies (in HxWxC layout); the batched
        torch ciphers (:mod:`mmseg_keyprotect.models.batched_ciphers`) take
        them from here, so every key derivation lives in one place.
        """
        return self._cached(key, tuple(int(s) for s in shape), 'enc', self._build)

    def derived_tables(self, key: SecretKey) -> bytes:
        """The tables of one ``M x M x C`` block (C = ``num_channels``, else 3), as bytes.

        Whole-image tables are these, tiled over the blocks.
        """
        m = self.block_size
        tables = self.tables(key, (m, m, self.num_channels or 3))
        tables = tables if isinstance(tables, tuple) else (tables, )
        return b''.join(np.ascontiguousarray(t).tobytes() for t in tables)

    def check_image(self, img: Any) -> Shape:
        """Validate ``img`` and return its ``(H, W, C)`` shape.

        Raises:
            ValueError: naming the shape, dtype and block size of a bad image.
        """
        name = type(self).__name__
        if not isinstance(img, np.ndarray):
            raise ValueError(f'{name} expects results["img"] to be a numpy array, '
                             f'got {type(img).__name__}')
        shape = check_block_shape(img.shape, self.block_size, what=f'{name}: image')
        if self.num_channels is not None and shape[2] != self.num_channels:
            raise ValueError(f'{name}: image of shape {img.shape} has {shape[2]} channel(s), '
                             f'but num_channels={self.num_channels} '
                             f'(block_size={self.block_size})')
        if img.dtype not in self.dtypes:
            raise ValueError(
                f'{name}: unsupported image dtype {img.dtype} for an image of shape '
                f'{img.shape} (block_size={self.block_size}); supported: '
                f'{", ".join(str(d) for d in self.dtypes)}')
        if img.dtype.kind == 'f' and img.size and (img.min() < 0 or img.max() > 255):
            raise ValueError(
                f'{name}: float image of shape {img.shape} has values in '
                f'[{img.min():g}, {img.max():g}]; expected the 0..255 range')
        return shape

    # --------------------------------------------------------------- internals
    def _purpose(self, shape: Shape) -> str:
        return f'{self.cipher_name}/block={self.block_size}/channels={shape[2]}'

    def _cached(self, key: SecretKey, shape: Shape, kind: str,
                build: Callable[[SecretKey, Shape], Any]) -> Any:
        cache_key = (kind, key.fingerprint, shape)
        if cache_key in self._tables:
            self._tables.move_to_end(cache_key)
            return self._tables[cache_key]
        table = build(key, shape)
        self._tables[cache_key] = table
        if len(self._tables) > _CACHE_SIZE:
            self._tables.popitem(last=False)
        return table

    def _build(self, key: SecretKey, shape: Shape) -> Any:
        raise NotImplementedError

    def _apply(self, img: np.ndarray, table: Any) -> np.ndarray:
        raise NotImplementedError

    def __getstate__(self) -> Dict[str, Any]:
        # Tables are derived data: rebuild them in the worker instead of pickling them.
        state = self.__dict__.copy()
        state['_tables'] = OrderedDict()
        return state

    def describe(self) -> Dict[str, Any]:
        """``{'type': 'BlockShuffle', 'block_size': M, 'key': FINGERPRINT}``."""
        return {**super().describe(), 'block_size': self.block_size}

    def _extra_repr(self) -> str:
        return ''

    def __repr__(self) -> str:
        return (f'{type(self).__name__}(block_size={self.block_size}, '
                f'num_channels={self.num_channels}, {self._key_repr()}{self._extra_repr()})')


@TRANSFORMS.register_module()
class BlockShuffle(BlockCipher):
    """SHF: shuffle the ``M*M*C`` values of every block with one keyed permutation.

    Output has the input's dtype (uint8 or float). :meth:`decrypt` inverts it.

    Example:
        >>> t = BlockShuffle(block_size=4, key=SecretKey.generate())
        >>> img = np.random.randint(0, 256, (8, 8, 3), np.uint8)
        >>> enc = t(dict(img=img.copy()))['img']
        >>> bool((t.decrypt(enc) == img).all())
        True
    """

    cipher_name = 'shf'
    dtypes = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))

    def _build(self, key: SecretKey, shape: Shape) -> np.ndarray:
        n = self.block_size**2 * shape[2]
        return gather_index(key.permutation(self._purpose(shape), n), shape, self.block_size)

    def _apply(self, img: np.ndarray, index: np.ndarray) -> np.ndarray:
        return np.take(img.reshape(-1), index)

    def decrypt(self, img: np.ndarray, key: Optional[SecretKey] = None) -> np.ndarray:
        """Undo :meth:`encrypt` with the same key."""
        shape = self.check_image(img)
        key = self.correct_key if key is None else key
        index = self._cached(key, shape, 'enc', self._build)
        out = np.empty(img.size, dtype=img.dtype)
        out[index] = img.reshape(-1)
        return out.reshape(img.shape)


@TRANSFORMS.register_module()
class BlockNegPos(BlockCipher):
    """NP: invert (``v -> 255 - v``) a keyed half of the positions of every block.

    Output has the input's dtype: uint8, or float in 0..255. The
    transformation is its own inverse; :meth:`decrypt` is provided for symmetry.
    """

    cipher_name = 'np'
    dtypes = (np.dtype(np.uint8), np.dtype(np.float32), np.dtype(np.float64))

    def _build(self, key: SecretKey, shape: Shape) -> Tuple[np.ndarray, np.ndarray]:
        n = self.block_size**2 * shape[2]
        mask = tile_over_blocks(key.mask(self._purpose(shape), n), shape, self.block_size)
        # 255 - v == v XOR 255 for uint8, so uint8 images need one XOR pass.
        return mask, mask.view(np.uint8) * np.uint8(255)

    def _apply(self, img: np.ndarray, tables: Tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        mask, xor_pattern = tables
        if img.dtype == np.uint8:
            return np.bitwise_xor(img, xor_pattern.reshape(img.shape))
        return np.where(mask.reshape(img.shape), img.dtype.type(255) - img, img)

    def decrypt(self, img: np.ndarray, key: Optional[SecretKey] = None) -> np.ndarray:
        """Undo :meth:`encrypt` (NP is an involution)."""
        return self.encrypt(img, key)


@functools.lru_cache(maxsize=256)
def ffx_lookup(password: bytes, length: int = 3) -> np.ndarray:
    """Encrypt 0..255 with a ``length``-digit ``pyffx.Integer`` cipher.

    Returns:
        np.ndarray: int64 lookup table of 256 entries in ``0 .. 10**length - 1``.
    """
    cipher = pyffx.Integer(password, length=length)
    table = np.array([cipher.encrypt(v) for v in range(256)], dtype=np.int64)
    table.setflags(write=False)
    return table


#: FFX modes: ``'keyed'`` derives the password from the key (the protection default);
#: ``'paper'`` uses a fixed password and the key only chooses the encrypted values (paper 1).
FFX_MODES = ('keyed', 'paper')
#: The fixed password of ``mode='paper'``: paper 1 only says "a fixed password"; this is
#: the default of the authors' published FFX code.
PAPER_PASSWORD = 'password'


@TRANSFORMS.register_module()
class BlockFFX(BlockCipher):
    """FFX: format-preserving Feistel encryption of a keyed half of every block.

    Selected uint8 values go through a 3-digit ``pyffx.Integer`` cipher
    (0..255 -> 0..999) via a 256-entry lookup built once per password; the
    others are kept. The whole image is then divided by the lookup's maximum
    and multiplied by 255 (paper 1 divides by the maximum; the factor 255 keeps
    the 0..255 range that mmseg's normalisation expects), so the output is
    float32 in 0..255.

    Two modes:

    * ``'keyed'`` (default, the protection we recommend): the FFX password is
      derived from the key too, so a wrong key changes the lookup and its scale
      as well as the encrypted positions.
    * ``'paper'`` (paper 1, for reproducing it): a fixed, public password
      (``password``, default :data:`PAPER_PASSWORD`); the key only chooses which
      values are encrypted. Weaker: the lookup is the same for every key.

    Args:
        block_size (int): block side M.
        key (SecretKey | dict): the secret key or its source. It selects the
            positions and, in ``'keyed'`` mode, derives the FFX password.
        num_channels (int, optional): required channel count.
        mode (str): ``'keyed'`` or ``'paper'``. Defaults to ``'keyed'``.
        password (str, optional): the fixed password of ``'paper'`` mode.
            Defaults to :data:`PAPER_PASSWORD`; not allowed in ``'keyed'`` mode.

    Raises:
        ValueError: an unknown mode, or a password that is not a non-empty
            string or is given in ``'keyed'`` mode.
    """

    cipher_name = 'ffx'
    digits = 3

    def __init__(self,
                 block_size: int,
                 key: KeySpec = None,
                 num_channels: Optional[int] = None,
                 mode: str = 'keyed',
                 password: Optional[str] = None) -> None:
        super().__init__(block_size=block_size, key=key, num_channels=num_channels)
        if mode not in FFX_MODES:
            raise ValueError(f'BlockFFX: mode must be one of {FFX_MODES}, got {mode!r}')
        if mode == 'keyed' and password is not None:
            raise ValueError("BlockFFX: a fixed password is paper 1's setting; give "
                             "mode='paper' with it (mode='keyed' derives it from the key)")
        if mode == 'paper':
            password = PAPER_PASSWORD if password is None else password
            if not isinstance(password, str) or not password:
                raise ValueError(f'BlockFFX: password must be a non-empty string, got '
                                 f'{password!r}')
        self.mode = mode
        self._password = password

    def _password_for(self, key: SecretKey) -> bytes:
        if self.mode == 'paper':
            return self._password.encode()
        return key.derive_bytes('ffx/password', 16).hex().encode()

    def _build(self, key: SecretKey, shape: Shape) -> Tuple[np.ndarray, np.ndarray]:
        n = self.block_size**2 * shape[2]
        mask = tile_over_blocks(key.mask(self._purpose(shape), n), shape, self.block_size)
        lookup = ffx_lookup(self._password_for(key), self.digits)
        scale = 255.0 / float(lookup.max())
        # One table for both branches: index v -> kept value, 256 + v -> encrypted value.
        table = (np.concatenate([np.arange(256), lookup]) * scale).astype(np.float32)
        offset = (mask.astype(np.uint16) * 256).reshape(-1)
        return table, offset

    def _apply(self, img: np.ndarray, tables: Tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        table, offset = tables
        index = np.add(img.reshape(-1), offset, dtype=np.uint16)
        return np.take(table, index)

    def describe(self) -> Dict[str, Any]:
        """Also the mode: a model trained on one FFX mode's images is not the other's."""
        return {**super().describe(), 'mode': self.mode}

    def _extra_repr(self) -> str:
        return f', mode={self.mode!r}'
