"""mmseg's ``SegDataPreProcessor`` with a block cipher applied to the batch, on its device.

When the CPU dataloader decides the training speed, move the cipher dict from
the pipeline into the data preprocessor; the protection is the same (same key,
same tables, bit-identical inputs), so a model trained with one placement is
tested with the other::

    model = dict(data_preprocessor=dict(
        type='BlockCipherSegDataPreProcessor',
        cipher=dict(type='BlockShuffle', block_size=4, key=dict(file='work_dirs/owner.key')),
        mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True,
        size=(256, 256), pad_val=0, seg_pad_val=255))

Order of operations: move to the device, **encrypt** (the images are still the
BGR uint8 the pipeline cipher would have seen), then everything mmseg's
preprocessor does (BGR->RGB, float, normalise, pad and stack), so padding never
cuts a block and the padded border stays unencrypted, exactly as with the cipher
in the pipeline.
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

import numpy as np
import torch
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS, TRANSFORMS

from ..keyed import ImageCipher
from ..keys import SecretKey
from ..protection import PreprocessorCipher, keyed_type
from ..transforms.block_cipher import BlockCipher
from .batched_ciphers import BatchedBlockCipher

__all__ = ['BlockCipherSegDataPreProcessor']

Number = Union[int, float]


def _check_pad_sizes(name: str, sizes: Mapping[str, Any], block_size: int, cipher: str) -> None:
    """Raise unless every padding size/divisor is a multiple of ``block_size``."""
    for what, value in sizes.items():
        if value is None:
            continue
        values = value if isinstance(value, (list, tuple)) else (value, )
        if any(int(v) % block_size for v in values):
            raise ValueError(
                f'{name}: {what}={value!r} is not a multiple of {cipher} block_size='
                f'{block_size}: padded inputs would not be whole {block_size}x{block_size} '
                f'blocks; use sizes that are multiples of {block_size}')


@MODELS.register_module()
@keyed_type(PreprocessorCipher(plain='SegDataPreProcessor', field='cipher'))
class BlockCipherSegDataPreProcessor(SegDataPreProcessor, ImageCipher):
    """``SegDataPreProcessor`` that encrypts the batch with a block cipher first.

    A keyed component: the key-condition loops switch it to plain (no
    encryption) or to an incorrect key like the pipeline ciphers, and the
    protection descriptor stored in checkpoints lists it as its cipher
    (``{'type': 'BlockShuffle', 'block_size': 4, 'key': FINGERPRINT}``), the
    same entry as the cipher in the pipeline.

    Args:
        cipher (dict | BlockCipher): the pipeline cipher's config dict,
            unchanged (``dict(type='BlockShuffle', block_size=4, key=...)``),
            or a built cipher.
        mean, std, size, size_divisor, pad_val, seg_pad_val, bgr_to_rgb,
            rgb_to_bgr, batch_augments, test_cfg: as for mmseg's
            ``SegDataPreProcessor``. ``size``, ``size_divisor`` and
            ``test_cfg``'s ``size``/``size_divisor`` must be multiples of the
            block size.

    Raises:
        ValueError: a padding size that is not a multiple of the block size.
        TypeError: ``cipher`` is not a block cipher with a torch kernel.

    Example:
        >>> pre = MODELS.build(dict(type='BlockCipherSegDataPreProcessor',
        ...                         cipher=dict(type='BlockNegPos', block_size=4,
        ...                                     key=dict(env='KP_KEY')),
        ...                         bgr_to_rgb=True))  # doctest: +SKIP
        >>> batch = pre(dict(inputs=[img_chw_uint8], data_samples=[sample]))  # doctest: +SKIP
    """

    def __init__(self,
                 cipher: Union[Dict[str, Any], BlockCipher],
                 mean: Optional[Sequence[Number]] = None,
                 std: Optional[Sequence[Number]] = None,
                 size: Optional[tuple] = None,
                 size_divisor: Optional[int] = None,
                 pad_val: Number = 0,
                 seg_pad_val: Number = 255,
                 bgr_to_rgb: bool = False,
                 rgb_to_bgr: bool = False,
                 batch_augments: Optional[List[dict]] = None,
                 test_cfg: Optional[dict] = None) -> None:
        super().__init__(mean=mean, std=std, size=size, size_divisor=size_divisor,
                         pad_val=pad_val, seg_pad_val=seg_pad_val, bgr_to_rgb=bgr_to_rgb,
                         rgb_to_bgr=rgb_to_bgr, batch_augments=batch_augments,
                         test_cfg=test_cfg)
        if isinstance(cipher, Mapping):
            cipher = TRANSFORMS.build(dict(cipher))
        try:
            batched = BatchedBlockCipher(cipher)
        except TypeError:
            raise TypeError(f'{type(self).__name__}: cipher must be a block cipher config '
                            f'(BlockShuffle, BlockNegPos, BlockFFX, BlockScramble), got '
                            f'{type(cipher).__name__}') from None
        _check_pad_sizes(type(self).__name__, {
            'size': size, 'size_divisor': size_divisor,
            'test_cfg.size': (test_cfg or {}).get('size'),
            'test_cfg.size_divisor': (test_cfg or {}).get('size_divisor')},
            cipher.block_size, type(cipher).__name__)
        self.cipher = cipher
        self.batched = batched
        # The same key as the cipher: one component, switched as one.
        self._init_key(cipher.correct_key)

    def describe(self) -> Dict[str, Any]:
        """Its cipher's description: the same protection as that cipher in the pipeline."""
        return self.cipher.describe()

    def derived_tables(self, key: SecretKey) -> bytes:
        """Its cipher's tables."""
        return self.cipher.derived_tables(key)

    @property
    def block_size(self) -> int:
        """The cipher's block size."""
        return self.cipher.block_size

    def encrypt(self, img: np.ndarray, key: Optional[SecretKey] = None) -> np.ndarray:
        """Encrypt one ``(H, W, C)`` image as the cipher in a pipeline would."""
        return self.cipher.encrypt(img, key)

    def forward(self, data: dict, training: bool = False) -> Dict[str, Any]:
        """Encrypt ``data['inputs']`` with the active key, then mmseg's preprocessing.

        Args:
            data: a batch from the dataloader (``inputs``: list of ``(C, H, W)``
                tensors as packed by ``PackSegInputs``).
            training: as for ``SegDataPreProcessor``.

        Returns:
            dict: ``inputs`` (the normalised, padded ``(N, C, H, W)`` batch) and
            ``data_samples``.
        """
        data = self.cast_data(data)
        if self.active_key is not None:
            data = {**data, 'inputs': self.encrypt_inputs(data['inputs'], self.active_key)}
        return super().forward(data, training)

    def encrypt_inputs(self, inputs: Union[torch.Tensor, Sequence[torch.Tensor]],
                       key: Optional[SecretKey] = None) -> List[torch.Tensor]:
        """Encrypt a list of ``(C, H, W)`` images (or an ``(N, C, H, W)`` batch).

        Images of the same shape and dtype are encrypted as one batch.

        Args:
            inputs: the images, on any device.
            key: the key. Defaults to the correct key.

        Returns:
            list[torch.Tensor]: the encrypted images, in order.
        """
        key = self.correct_key if key is None else key
        if isinstance(inputs, torch.Tensor) and inputs.ndim == 4:
            return list(self.batched.encrypt(inputs, key).unbind(0))
        groups: Dict[Any, List[int]] = {}
        for i, img in enumerate(inputs):
            if not isinstance(img, torch.Tensor) or img.ndim != 3:
                raise ValueError(
                    f'{type(self.cipher).__name__}: expected (C, H, W) image tensors, got '
                    f'{tuple(img.shape) if isinstance(img, torch.Tensor) else type(img)}')
            groups.setdefault((tuple(img.shape), img.dtype, img.device), []).append(i)
        out: List[Optional[torch.Tensor]] = [None] * len(inputs)
        for index in groups.values():
            batch = torch.stack([inputs[i] for i in index])
            for i, img in zip(index, self.batched.encrypt(batch, key).unbind(0)):
                out[i] = img
        return out  # type: ignore[return-value]

    def extra_repr(self) -> str:
        c = self.cipher
        return (f'cipher={type(c).__name__}(block_size={c.block_size}, '
                f'num_channels={c.num_channels}{c._extra_repr()}), {self._key_repr()}')
