"""AES-256-GCM for sealed groups: one shot between buffers, streamed in place, on every core.

Cost. AES-GCM runs at several GB/s a core here; what a naive seal or open pays
for is fresh memory (page faults) and copies. So each ciphertext is written
into a buffer that also holds its tag after it (:func:`take_buffers`), and the
buffers of a group are kept for the next seal of the same sizes (reused once
the previous checkpoint is dropped; ciphertext only). Checking a tag or
decrypting over the ciphertext itself is streamed through a scratch buffer of
:data:`CHUNK` bytes (:class:`GCM`), and the tensors of a group are spread over
a thread per core (:func:`parallel`; AES-GCM releases the GIL).
"""
from __future__ import annotations

import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from torch import Tensor

from .format import nonce

__all__ = ['GCM', 'TAG_BYTES', 'SALT_BYTES', 'CHUNK', 'parallel', 'nbytes', 'flat',
           'take_buffers', 'release_seal_buffers']

SALT_BYTES = 16
TAG_BYTES = 16
#: Bytes per streamed AES-GCM step (the scratch buffer stays in the core's cache).
CHUNK = 1 << 20


def nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def flat(tensor: Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a ``uint8`` array over its own memory."""
    return tensor.detach().reshape(-1).view(torch.uint8).numpy()


# ------------------------------------------------------------------------------ the cipher
class GCM:
    """AES-256-GCM under one group's key: one shot between two buffers, or streamed in place.

    Streaming (``Cipher``/``modes.GCM``) goes through a scratch buffer of
    :data:`CHUNK` bytes that stays in the core's cache, so checking a tag or
    decrypting over the ciphertext itself costs no buffer of the tensor's size.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return 'GCM(<key>)'

    def encrypt(self, index: int, plain: np.ndarray, out: np.ndarray, aad: bytes) -> None:
        """``out`` (``len(plain) + 16`` bytes) becomes ``ciphertext || tag``."""
        if hasattr(self._aead, 'encrypt_into'):  # cryptography >= 45: no intermediate bytes
            self._aead.encrypt_into(nonce(index), plain, aad, out)
        else:
            out[:] = np.frombuffer(self._aead.encrypt(nonce(index), plain.tobytes(), aad),
                                   np.uint8)

    def encrypt_in_place(self, index: int, data: np.ndarray, aad: bytes) -> bytes:
        """Encrypt ``data`` over itself; returns the tag."""
        context = self._context(index, aad, None)
        _stream(context, data, data)
        context.finalize()
        return context.tag

    def decrypt(self, index: int, whole: np.ndarray, out: np.ndarray, aad: bytes) -> bool:
        """``out`` becomes the plaintext of ``whole`` (``ciphertext || tag``); False if forged.

        ``out`` may hold unauthenticated bytes when False is returned.
        """
        try:
            if hasattr(self._aead, 'decrypt_into'):
                self._aead.decrypt_into(nonce(index), whole, aad, out)
            else:
                out[:] = np.frombuffer(self._aead.decrypt(nonce(index), whole.tobytes(), aad),
                                       np.uint8)
        except InvalidTag:
            return False
        return True

    def check(self, index: int, ciphertext: np.ndarray, tag: bytes, aad: bytes,
              in_place: bool = False) -> bool:
        """Whether ``tag`` authenticates ``ciphertext``; ``in_place`` also decrypts it over itself.

        Without ``in_place`` nothing outside the scratch buffer is written.
        """
        context = self._context(index, aad, tag)
        _stream(context, ciphertext, ciphertext if in_place else None)
        try:
            context.finalize()
        except InvalidTag:
            return False
        return True

    def _context(self, index: int, aad: bytes, tag: Optional[bytes]) -> Any:
        cipher = Cipher(algorithms.AES(self._key), modes.GCM(nonce(index), tag))
        context = cipher.encryptor() if tag is None else cipher.decryptor()
        context.authenticate_additional_data(aad)
        return context


def _stream(context: Any, source: np.ndarray, target: Optional[np.ndarray]) -> None:
    """Run ``context`` over ``source`` piece by piece; each output piece goes to ``target``.

    ``target`` may be ``source`` itself: a piece is read before it is overwritten.
    """
    scratch = np.empty(min(len(source), CHUNK) + TAG_BYTES, np.uint8)
    for start in range(0, len(source), CHUNK):
        piece = source[start:start + CHUNK]
        done = context.update_into(piece, scratch)
        if done != len(piece):
            raise RuntimeError(f'AES-GCM returned {done} of {len(piece)} bytes')
        if target is not None:
            target[start:start + done] = scratch[:done]


def parallel(work: Callable[[int], Any], sizes: Sequence[int]) -> List[Any]:
    """``[work(0), ..., work(n - 1)]`` on a thread per core, largest ``sizes`` first.

    AES-GCM releases the GIL. Each thread takes the next item when it is done
    with one (a busy core takes fewer), the calling thread being one of them.
    """
    order = iter(sorted(range(len(sizes)), key=sizes.__getitem__, reverse=True))
    results: List[Any] = [None] * len(sizes)
    lock = threading.Lock()

    def drain() -> None:
        while True:
            with lock:
                i = next(order, None)
            if i is None:
                return
            results[i] = work(i)

    cores = len(os.sched_getaffinity(0)) if hasattr(os, 'sched_getaffinity') else os.cpu_count()
    helpers = min(len(sizes), cores or 1) - 1
    if helpers <= 0:
        drain()
        return results
    with ThreadPoolExecutor(max_workers=helpers) as pool:
        running = [pool.submit(drain) for _ in range(helpers)]
        drain()
        for future in running:
            future.result()
    return results


def _use_count(tensor: Tensor) -> Optional[int]:
    """How many tensors share ``tensor``'s storage (None where torch does not tell)."""
    counter = getattr(torch._C, '_storage_Use_Count', None)
    return None if counter is None else counter(tensor.untyped_storage()._cdata)


class _BufferPool:
    """Ciphertext buffers kept for the next seal of a group of the same sizes.

    Faulting in fresh memory for a few hundred MiB costs more than AES-GCM
    takes to fill it (0.11 s against 0.03 s for 378 MiB on two cores), and a
    run seals checkpoints of the same sizes again and again. A kept set is
    reused only when no tensor shares any of its storages any more (the
    previous checkpoint was written and dropped); otherwise a new set is made.
    One buffer per tensor, as ``torch.save`` writes a plain checkpoint: the
    file loads the same way. No key is kept; a kept buffer holds the ciphertext
    last written into it (or, if that checkpoint was opened in place in memory,
    its plaintext) until the next seal overwrites all of it.
    """

    def __init__(self, keep: int, min_bytes: int) -> None:
        self.keep = keep
        self.min_bytes = min_bytes
        self._kept: List[Tuple[Tuple[int, ...], List[Tensor], List[Optional[int]]]] = []
        self._lock = threading.Lock()

    def take(self, sizes: Sequence[int]) -> List[Tensor]:
        """A ``uint8`` buffer per size that nothing else uses (views: held while in use)."""
        sizes = tuple(sizes)
        if sum(sizes) < self.min_bytes:
            return [torch.empty(size, dtype=torch.uint8) for size in sizes]
        with self._lock:
            for i, (kept_sizes, buffers, idle) in enumerate(self._kept):
                if kept_sizes == sizes and all(_use_count(buffer) == count
                                               for buffer, count in zip(buffers, idle)):
                    self._kept.append(self._kept.pop(i))
                    return [buffer[:] for buffer in buffers]
            buffers = [torch.empty(size, dtype=torch.uint8) for size in sizes]
            idle = [_use_count(buffer) for buffer in buffers]
            if None not in idle:
                self._kept = (self._kept + [(sizes, buffers, idle)])[-self.keep:]
            return [buffer[:] for buffer in buffers]

    def clear(self) -> None:
        """Forget every kept set (its memory goes with the last checkpoint that uses it)."""
        with self._lock:
            self._kept.clear()


_BUFFERS = _BufferPool(keep=4, min_bytes=1 << 20)


def take_buffers(sizes: Sequence[int]) -> List[Tensor]:
    """A ``uint8`` buffer per size for a group's ciphertexts (kept ones when free)."""
    return _BUFFERS.take(sizes)


def release_seal_buffers() -> None:
    """Let go of the ciphertext buffers kept for the next seal (e.g. when a run is over).

    They take about the size of the checkpoints last sealed; the next seal
    makes new ones.
    """
    _BUFFERS.clear()
