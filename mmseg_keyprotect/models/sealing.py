"""The sealed format: AES-256-GCM over every tensor of a group, with an authenticated header.

A channel permutation or a block cipher leaves stolen weights usable: the
attacks in ``docs/security.md`` recover most of the correct-key accuracy from
a few labelled images. Encrypting the weights takes that advantage away for a
stolen *file*: without the key its tensors are indistinguishable from random
bits, and with a wrong or tampered file nothing is loaded.

Format (``mmseg-keyprotect/aes-256-gcm/v2``). :func:`seal` encrypts every
tensor of a group (a model's ``state_dict``, an optimizer's state, ...) with
AES-256-GCM from ``cryptography``:

* a fresh random 16-byte *salt* per group gives the group its own key,
  ``key.derive_bytes('seal/' + salt)``, so no two files (or groups) share a
  key and a tensor moved from one checkpoint into another fails to decrypt;
* tensor ``i`` of the group uses nonce ``i`` under that key, and its
  associated data binds the format, the salt, the tensor's path, dtype and
  shape, and a digest of the protection descriptor (what is permuted or
  enciphered with which key fingerprint);
* the ciphertext keeps the tensor's dtype and shape (GCM is a stream mode), so
  the thief's copy is a model of random bits of the right shapes; the 16-byte
  tags go to the group's *header*, a JSON document stored as a ``uint8``
  tensor under :data:`MARKER`, with the key fingerprint, the salt, the
  descriptor and an HMAC-SHA256 of all of it.

Cost. AES-GCM runs at several GB/s a core here; what a naive seal or open pays
for is fresh memory (page faults) and copies. So each ciphertext is written
into a buffer that also holds its tag after it, and the buffers of a group are
kept for the next seal of the same sizes (reused once the previous checkpoint is
dropped; ciphertext only). Opening decrypts a model's ``state_dict`` straight
into the model's parameters, after verifying every tag of the group (a first
pass that writes nothing), and a checkpoint's other entries over their own
ciphertext, checked as they are decrypted and encrypted back, bit for bit, if
any tag fails (:class:`SealedGroup`). Neither is done where another process
could change the ciphertext meanwhile (shared memory, a memory-mapped file):
there the plaintext gets new memory.

The model side (a model that opens sealed ``state_dict`` s, sealing a run's
checkpoints) is :mod:`mmseg_keyprotect.models.weight_encryption`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from torch import Tensor

from ..keys import SecretKey

__all__ = [
    'MARKER', 'FORMAT', 'EncryptedWeightsError', 'Descriptor', 'seal', 'open_sealed',
    'read_header', 'is_sealed', 'SealedGroup', 'release_seal_buffers'
]

#: Entry that holds a sealed group's header (a ``uint8`` tensor of JSON).
MARKER = 'keyprotect_encryption'
#: Version of the sealed format.
FORMAT = 'mmseg-keyprotect/aes-256-gcm/v2'

Descriptor = List[Dict[str, Any]]
Path = Tuple[Any, ...]

_SALT_BYTES = 16
_TAG_BYTES = 16
#: Bytes per streamed AES-GCM step (the scratch buffer stays in the core's cache).
_CHUNK = 1 << 20


class EncryptedWeightsError(ValueError):
    """Sealed weights could not be opened: wrong key, tampering, or plaintext refused."""


# ---------------------------------------------------------------------------- the format
def _canonical(value: Any) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(',', ':')).encode()


def _digest(descriptor: Optional[Descriptor]) -> str:
    return hashlib.sha256(_canonical(_sorted(descriptor))).hexdigest()


def _sorted(descriptor: Optional[Descriptor]) -> Optional[Descriptor]:
    if descriptor is None:
        return None
    return sorted((dict(entry) for entry in descriptor), key=lambda e: _canonical(e))


def _aad(salt: str, digest: str, path: Sequence[Any], tensor: Tensor) -> bytes:
    return _canonical([FORMAT, salt, digest, list(path), str(tensor.dtype), list(tensor.shape)])


def _nonce(index: int) -> bytes:
    return index.to_bytes(12, 'big')


def _header_mac(key: SecretKey, header: Mapping[str, Any]) -> str:
    body = {k: v for k, v in header.items() if k != 'mac'}
    return hmac.new(key.derive_bytes('seal/header'), _canonical(body), hashlib.sha256).hexdigest()


def _raw(tensor: Tensor) -> Tensor:
    """The bytes of ``tensor`` as a flat ``uint8`` CPU tensor (a view when it can be)."""
    source = tensor.detach().cpu().contiguous()
    return source.reshape(-1).view(torch.uint8) if source.numel() else \
        torch.zeros(0, dtype=torch.uint8)


def _nbytes(tensor: Tensor) -> int:
    return tensor.numel() * tensor.element_size()


def _flat(tensor: Tensor) -> np.ndarray:
    """The bytes of a contiguous CPU tensor as a ``uint8`` array over its own memory."""
    return tensor.detach().reshape(-1).view(torch.uint8).numpy()


# ------------------------------------------------------------------------------ the cipher
class _GCM:
    """AES-256-GCM under one group's key: one shot between two buffers, or streamed in place.

    Streaming (``Cipher``/``modes.GCM``) goes through a scratch buffer of
    :data:`_CHUNK` bytes that stays in the core's cache, so checking a tag or
    decrypting over the ciphertext itself costs no buffer of the tensor's size.
    """

    def __init__(self, key: bytes) -> None:
        self._key = key
        self._aead = AESGCM(key)

    def __repr__(self) -> str:
        return '_GCM(<key>)'

    def encrypt(self, index: int, plain: np.ndarray, out: np.ndarray, aad: bytes) -> None:
        """``out`` (``len(plain) + 16`` bytes) becomes ``ciphertext || tag``."""
        if hasattr(self._aead, 'encrypt_into'):  # cryptography >= 45: no intermediate bytes
            self._aead.encrypt_into(_nonce(index), plain, aad, out)
        else:
            out[:] = np.frombuffer(self._aead.encrypt(_nonce(index), plain.tobytes(), aad),
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
                self._aead.decrypt_into(_nonce(index), whole, aad, out)
            else:
                out[:] = np.frombuffer(self._aead.decrypt(_nonce(index), whole.tobytes(), aad),
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
        cipher = Cipher(algorithms.AES(self._key), modes.GCM(_nonce(index), tag))
        context = cipher.encryptor() if tag is None else cipher.decryptor()
        context.authenticate_additional_data(aad)
        return context


def _stream(context: Any, source: np.ndarray, target: Optional[np.ndarray]) -> None:
    """Run ``context`` over ``source`` piece by piece; each output piece goes to ``target``.

    ``target`` may be ``source`` itself: a piece is read before it is overwritten.
    """
    scratch = np.empty(min(len(source), _CHUNK) + _TAG_BYTES, np.uint8)
    for start in range(0, len(source), _CHUNK):
        piece = source[start:start + _CHUNK]
        done = context.update_into(piece, scratch)
        if done != len(piece):
            raise RuntimeError(f'AES-GCM returned {done} of {len(piece)} bytes')
        if target is not None:
            target[start:start + done] = scratch[:done]


def _parallel(work: Callable[[int], Any], sizes: Sequence[int]) -> List[Any]:
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


# ----------------------------------------------------------------------- sealing
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


def release_seal_buffers() -> None:
    """Let go of the ciphertext buffers kept for the next seal (e.g. when a run is over).

    They take about the size of the checkpoints last sealed; the next seal
    makes new ones.
    """
    _BUFFERS.clear()


def _seal_one(gcm: _GCM, index: int, tensor: Tensor, out: Tensor, aad: bytes) -> None:
    """Write ``ciphertext || tag`` of ``tensor`` into ``out`` (``uint8``, its size + 16 bytes)."""
    size = out.numel() - _TAG_BYTES
    if tensor.device.type == 'cpu' and tensor.is_contiguous():
        gcm.encrypt(index, _flat(tensor), out.numpy(), aad)
        return
    # strided, or on an accelerator: copy it into place, then encrypt it there
    out[:size].view(tensor.dtype).view(tensor.shape).copy_(tensor.detach())
    tag = gcm.encrypt_in_place(index, out[:size].numpy(), aad)
    out[size:].numpy()[:] = np.frombuffer(tag, np.uint8)


def seal(tensors: Sequence[Tuple[Path, Tensor]], key: SecretKey,
         descriptor: Optional[Descriptor], kind: str) -> Tuple[List[Tensor], Tensor]:
    """Encrypt a group of tensors with AES-256-GCM.

    Args:
        tensors: ``(path, tensor)`` pairs; ``path`` is a tuple of keys/indices
            (for a ``state_dict``, ``(name, )`` relative to its prefix).
        key: the key to seal with.
        descriptor: the protection the group belongs to (bound to every
            tensor); ``None`` for none.
        kind: ``'model'`` (a model's ``state_dict``, opened by the model's
            load hook) or ``'tree'`` (anything else, opened by the checkpoint
            hook).

    Returns:
        tuple: the ciphertexts (same dtype, shape and order as ``tensors``, on
        the CPU; each a view of a buffer that ends with its tag) and the header
        to store under :data:`MARKER`.
    """
    salt = os.urandom(_SALT_BYTES).hex()
    descriptor = _sorted(descriptor)
    digest = _digest(descriptor)
    gcm = _GCM(key.derive_bytes(f'seal/{salt}', 32))
    sizes = [_nbytes(tensor) for _, tensor in tensors]
    outs = _BUFFERS.take([size + _TAG_BYTES for size in sizes])
    _parallel(lambda i: _seal_one(gcm, i, tensors[i][1], outs[i], _aad(salt, digest, *tensors[i])),
              sizes)
    sealed, entries = [], []
    for (path, tensor), out, size in zip(tensors, outs, sizes):
        # the ciphertext keeps dtype and shape; its storage also holds the tag (16 bytes)
        sealed.append(out[:size].view(tensor.dtype).reshape(tensor.shape))
        entries.append([list(path), out[size:].numpy().tobytes().hex()])
    header = {'format': FORMAT, 'kind': kind, 'key': key.fingerprint, 'salt': salt,
              'protection': descriptor, 'tensors': entries}
    header['mac'] = _header_mac(key, header)
    return sealed, torch.from_numpy(np.frombuffer(_canonical(header), np.uint8).copy())


def read_header(marker: Any, where: str = 'the file') -> Dict[str, Any]:
    """Parse a header stored under :data:`MARKER` (no key needed: it holds no secret).

    Raises:
        EncryptedWeightsError: if it is not a header of this format.
    """
    try:
        header = json.loads(_raw(marker).numpy().tobytes().decode())
    except (TypeError, ValueError, AttributeError, RuntimeError):
        header = None
    if not isinstance(header, dict) or header.get('format') != FORMAT:
        raise EncryptedWeightsError(f'{where}: {MARKER!r} is not a {FORMAT} header (written by '
                                    'another version of mmseg-keyprotect, or damaged)')
    return header


# ----------------------------------------------------------------------- opening
def _private(storage: torch.UntypedStorage) -> bool:
    """Whether only this process can change ``storage`` (not shared memory, not a mapped file)."""
    return storage.device.type == 'cpu' and not storage.is_shared() and \
        getattr(storage, 'filename', None) is None


def _sealed_bytes(sealed: Tensor, tag: bytes) -> Tuple[Tensor, bool]:
    """``ciphertext || tag`` of a sealed tensor as CPU ``uint8``, and whether only we can change it.

    A sealed tensor is saved as a view of a buffer where its tag follows it: that
    memory is used as it is. Anything else is copied.
    """
    size = _nbytes(sealed)
    storage = sealed.untyped_storage()
    start = sealed.storage_offset() * sealed.element_size()
    if sealed.is_contiguous() and sealed.numel() and \
            storage.nbytes() >= start + size + _TAG_BYTES:
        flat = sealed.detach().reshape(-1).view(torch.uint8)
        whole = flat.as_strided((size + _TAG_BYTES, ), (1, ), flat.storage_offset()).cpu()
        if whole[size:].numpy().tobytes() == tag:
            return whole, storage.device.type != 'cpu' or _private(storage)
    return torch.cat([_raw(sealed), torch.tensor(list(tag), dtype=torch.uint8)]), True


def _fits(into: Any, sealed: Tensor) -> bool:
    return isinstance(into, Tensor) and into.device.type == 'cpu' and \
        into.dtype == sealed.dtype and into.shape == sealed.shape and into.is_contiguous()


class _Item:
    """One tensor of a group being opened: its ciphertext, tag, associated data and target."""

    def __init__(self, index: int, path: Path, sealed: Tensor, tag: bytes, aad: bytes,
                 into: Any) -> None:
        self.index, self.path, self.sealed, self.tag, self.aad = index, path, sealed, tag, aad
        self.size = _nbytes(sealed)
        self.whole, private = _sealed_bytes(sealed, tag)
        self.into: Optional[Tensor] = None
        # the plaintext goes into ``into`` only where nothing else can change the
        # ciphertext between the check of its tag and the decryption
        if private and _fits(into, sealed):
            self.into = into.detach()
        self.in_place = self.into is not None and self.size > 0 and \
            self.into.data_ptr() == self.whole.data_ptr()

    def drop_target(self) -> None:
        """Decrypt into new memory after all."""
        self.into, self.in_place = None, False

    def ciphertext(self) -> np.ndarray:
        """The ciphertext part of :attr:`whole` (writable: it is decrypted over itself)."""
        return self.whole[:self.size].numpy()


def _separate(items: Sequence[_Item]) -> bool:
    """Whether no target overlaps a ciphertext or another target.

    A target may be its own ciphertext (in place), or the very same memory as
    another target (tied weights: one parameter under two names).
    """
    targets = {(item.into.data_ptr(), item.size) for item in items
               if item.into is not None and not item.in_place}
    spans = [(item.whole.data_ptr(), item.size + _TAG_BYTES) for item in items]
    reach = 0
    for start, size in sorted(spans + list(targets)):
        if size:
            if start < reach:
                return False
            reach = start + size
    return True


class SealedGroup:
    """A sealed group checked against its header, then decrypted all or nothing.

    Building it checks the key, the header's HMAC, the descriptor and the set
    of tensors; :meth:`open` decrypts. A tensor goes into its target only as
    follows, so that nothing unauthenticated stays anywhere:

    * a target elsewhere (a model's parameter) is written only after
      :meth:`verify` checked every tag of the group;
    * a target that is the ciphertext itself is decrypted in place and checked
      as it is; if any tag fails, every tensor decrypted in place is encrypted
      back, bit for bit (:meth:`undo`), before the error;
    * a tensor without a target gets new memory.

    Args:
        header: from :func:`read_header`.
        tensors: path -> ciphertext, every tensor the group holds now.
        key: the key to open with.
        descriptor: the protection of what the group is loaded into; ``None``
            skips this check (the caller compares descriptors itself).
        where: how to name the group in messages (``'checkpoint state_dict'``).
        into: path -> where that tensor's plaintext goes: a contiguous CPU
            tensor of its dtype and shape. Used only where no other process can
            change the ciphertext (not shared memory, not a mapped file), and
            where no target overlaps another tensor's bytes.

    Raises:
        EncryptedWeightsError: one line naming what failed: another key, an
            edited header or descriptor, a tensor missing or added.
    """

    def __init__(self, header: Mapping[str, Any], tensors: Mapping[Path, Tensor],
                 key: SecretKey, descriptor: Optional[Descriptor], where: str,
                 into: Optional[Mapping[Path, Tensor]] = None) -> None:
        entries = _check_header(header, tensors, key, descriptor, where)
        digest, salt, into = _digest(header['protection']), header['salt'], into or {}
        self.where = where
        self._gcm = _GCM(key.derive_bytes(f'seal/{salt}', 32))
        self._items = [_Item(i, path, tensors[path], bytes.fromhex(tag),
                             _aad(salt, digest, path, tensors[path]), into.get(path))
                       for i, (path, tag) in enumerate(entries)]
        if not _separate(self._items):
            for item in self._items:
                item.drop_target()
        self._sizes = [item.size for item in self._items]
        self._verified = False

    def verify(self) -> None:
        """Check every tag without writing anything.

        Raises:
            EncryptedWeightsError: naming the first tensor that is not authentic.
        """
        if not self._verified:
            self._raise_first(_parallel(lambda i: self._check(self._items[i], False),
                                        self._sizes))
            self._verified = True

    def open(self) -> Dict[Path, Tensor]:
        """Decrypt every tensor; on any failure, nothing stays written.

        Returns:
            dict: path -> plaintext tensor (CPU): its target, or new memory.

        Raises:
            EncryptedWeightsError: naming the first tensor that is not authentic.
        """
        if any(item.into is not None and not item.in_place for item in self._items):
            self.verify()
        opened = _parallel(lambda i: self._decrypt(self._items[i]), self._sizes)
        if any(plain is None for plain in opened):
            self.undo()
            self._raise_first(opened, changed=self._verified)
        return {item.path: plain for item, plain in zip(self._items, opened)}

    def undo(self) -> None:
        """Encrypt back, bit for bit, the tensors :meth:`open` decrypted in place.

        For a group that opened when another one failed: AES-GCM's keystream
        depends only on the key, nonce and position, so this restores the
        ciphertext exactly (also of a tensor whose tag failed).
        """
        _parallel(lambda i: self._items[i].in_place and self._gcm.encrypt_in_place(
            self._items[i].index, self._items[i].ciphertext(), self._items[i].aad), self._sizes)

    def _check(self, item: _Item, in_place: bool) -> bool:
        return self._gcm.check(item.index, item.ciphertext(), item.tag, item.aad, in_place)

    def _decrypt(self, item: _Item) -> Optional[Tensor]:
        if item.in_place:
            return item.into if self._check(item, True) else None
        out = item.into if item.into is not None else \
            torch.empty(item.size, dtype=torch.uint8).view(item.sealed.dtype) \
            .reshape(item.sealed.shape)
        ok = self._gcm.decrypt(item.index, item.whole.numpy(), _flat(out), item.aad)
        return out if ok else None

    def _raise_first(self, results: Sequence[Any], changed: bool = False) -> None:
        for item, result in zip(self._items, results):
            if result is None or result is False:
                if changed:
                    raise EncryptedWeightsError(
                        f'{self.where}: tensor {_show(item.path)!r} changed while it was being '
                        'opened (after every tag was verified): its target holds garbage')
                raise EncryptedWeightsError(
                    f'{self.where}: tensor {_show(item.path)!r} failed authentication: its bytes '
                    'were changed (e.g. a flipped bit) or it comes from another checkpoint')


def _check_header(header: Mapping[str, Any], tensors: Mapping[Path, Tensor], key: SecretKey,
                  descriptor: Optional[Descriptor], where: str) -> List[Tuple[Path, str]]:
    """The header's ``(path, tag)`` entries, after checking what needs no decryption."""
    if header['key'] != key.fingerprint:
        raise EncryptedWeightsError(
            f'{where} is encrypted with the key of fingerprint {header["key"]}, but the model '
            f'was given the key of fingerprint {key.fingerprint}; give the key the model was '
            'trained with')
    if not hmac.compare_digest(str(header.get('mac')), _header_mac(key, header)):
        raise EncryptedWeightsError(f'{where}: the header of the sealed weights failed '
                                    'authentication: it was edited')
    sealed_for = header['protection']
    if descriptor is not None and _sorted(descriptor) != sealed_for:
        from_json = _format(sealed_for)
        raise EncryptedWeightsError(
            f'{where} was sealed for protection {from_json}, but is being loaded into '
            f'{_format(_sorted(descriptor))}; load it with the config it was trained with')
    entries = [(tuple(path), tag) for path, tag in header['tensors']]
    expected = {path for path, _ in entries}
    missing = sorted(map(_show, expected - set(tensors)))
    extra = sorted(map(_show, set(tensors) - expected))
    if missing or extra:
        raise EncryptedWeightsError(
            f'{where}: the sealed tensors do not match the header ('
            + '; '.join(filter(None, [missing and f'missing: {", ".join(missing[:5])}',
                                      extra and f'not sealed: {", ".join(extra[:5])}']))
            + '): tensors were removed or added')
    return entries


def open_sealed(header: Mapping[str, Any], tensors: Mapping[Path, Tensor], key: SecretKey,
                descriptor: Optional[Descriptor], where: str,
                into: Optional[Mapping[Path, Tensor]] = None) -> Dict[Path, Tensor]:
    """Check and decrypt a sealed group; nothing is returned or written unless all is authentic.

    Args:
        header: from :func:`read_header`.
        tensors: path -> ciphertext, every tensor the group holds now.
        key: the key to open with.
        descriptor: the protection of what the group is loaded into; ``None``
            skips this check (the caller compares descriptors itself).
        where: how to name the group in messages (``'checkpoint state_dict'``).
        into: path -> where that tensor's plaintext goes (see
            :class:`SealedGroup`); written only after every tag is verified.

    Returns:
        dict: path -> plaintext tensor (CPU).

    Raises:
        EncryptedWeightsError: one line naming what failed: another key, an
            edited header or descriptor, a tensor missing, added, changed
            (flipped bit) or taken from another checkpoint.
    """
    return SealedGroup(header, tensors, key, descriptor, where, into).open()


def _show(path: Path) -> str:
    return '.'.join(map(str, path))


def _format(descriptor: Optional[Descriptor]) -> str:
    if not descriptor:
        return 'none'
    return '[' + ', '.join(
        entry.get('type', '?') + '(' + ', '.join(f'{k}={v!r}' for k, v in entry.items()
                                                   if k != 'type') + ')'
        for entry in descriptor) + ']'


def is_sealed(state_dict: Mapping[str, Any], prefix: str = '') -> bool:
    """Whether ``state_dict`` holds a sealed group at ``prefix``."""
    return prefix + MARKER in state_dict
