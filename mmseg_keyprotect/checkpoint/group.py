"""One sealed group: seal a list of tensors, or check and open them all or nothing.

:func:`seal` encrypts every tensor of a group (a model's ``state_dict``, an
optimizer's state, ...) under a key derived from a fresh random salt,
``key.derive_bytes('seal/' + salt)``, so no two files (or groups) share a key
and a tensor moved from one checkpoint into another fails to decrypt. The
ciphertext keeps the tensor's dtype and shape (GCM is a stream mode), so the
thief's copy is a model of random bits of the right shapes; the tags go to the
group's header (:mod:`~mmseg_keyprotect.checkpoint.format`).

Opening (:class:`SealedGroup`) decrypts a model's ``state_dict`` straight into
the model's parameters, after verifying every tag of the group (a first pass
that writes nothing), and a checkpoint's other entries over their own
ciphertext, checked as they are decrypted and encrypted back, bit for bit, if
any tag fails. Neither is done where another process could change the
ciphertext meanwhile (shared memory, a memory-mapped file): there the
plaintext gets new memory.
"""
from __future__ import annotations

import hmac
import os
import weakref
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import Tensor

from ..keys import SecretKey
from .format import (FORMAT, Descriptor, EncryptedWeightsError, TreePath, aad, canonical,
                     descriptor_digest, header_mac, raw_bytes, show_path, sorted_descriptor)
from .gcm import GCM, SALT_BYTES, TAG_BYTES, flat, nbytes, parallel, take_buffers

__all__ = ['seal', 'SealedGroup', 'open_sealed', 'holds_its_tag']

Path = TreePath


def _seal_one(gcm: GCM, index: int, tensor: Tensor, out: Tensor, data: bytes) -> None:
    """Write ``ciphertext || tag`` of ``tensor`` into ``out`` (``uint8``, its size + 16 bytes)."""
    size = out.numel() - TAG_BYTES
    if tensor.device.type == 'cpu' and tensor.is_contiguous():
        gcm.encrypt(index, flat(tensor), out.numpy(), data)
        return
    # strided, or on an accelerator: copy it into place, then encrypt it there
    out[:size].view(tensor.dtype).view(tensor.shape).copy_(tensor.detach())
    tag = gcm.encrypt_in_place(index, out[:size].numpy(), data)
    out[size:].numpy()[:] = np.frombuffer(tag, np.uint8)


def seal(tensors: Sequence[Tuple[Path, Tensor]], key: SecretKey,
         descriptor: Optional[Descriptor], kind: str,
         fields: Optional[Mapping[str, Any]] = None) -> Tuple[List[Tensor], Tensor]:
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
        fields: more header fields (under the header's HMAC): ``manifest``
            (the group is listed in its file's manifest), ``arrays`` (paths
            that were numpy arrays).

    Returns:
        tuple: the ciphertexts (same dtype, shape and order as ``tensors``, on
        the CPU; each a view of a buffer that ends with its tag) and the header
        to store under :data:`MARKER`.
    """
    salt = os.urandom(SALT_BYTES).hex()
    descriptor = sorted_descriptor(descriptor)
    digest = descriptor_digest(descriptor)
    gcm = GCM(key.derive_bytes(f'seal/{salt}', 32))
    sizes = [nbytes(tensor) for _, tensor in tensors]
    outs = take_buffers([size + TAG_BYTES for size in sizes])
    parallel(lambda i: _seal_one(gcm, i, tensors[i][1], outs[i], aad(salt, digest, *tensors[i])),
              sizes)
    sealed, entries = [], []
    for (path, tensor), out, size in zip(tensors, outs, sizes):
        # the ciphertext keeps dtype and shape; its storage also holds the tag (16 bytes)
        sealed.append(out[:size].view(tensor.dtype).reshape(tensor.shape))
        _SEALED[id(sealed[-1])] = sealed[-1]
        entries.append([list(path), out[size:].numpy().tobytes().hex()])
    header = {'format': FORMAT, 'kind': kind, 'key': key.fingerprint, 'salt': salt,
              'protection': descriptor, 'tensors': entries, **(fields or {})}
    header['mac'] = header_mac(key, header)
    return sealed, torch.from_numpy(np.frombuffer(canonical(header), np.uint8).copy())


def _private(storage: torch.UntypedStorage) -> bool:
    """Whether only this process can change ``storage`` (not shared memory, not a mapped file)."""
    return storage.device.type == 'cpu' and not storage.is_shared() and \
        getattr(storage, 'filename', None) is None


def _with_tag(sealed: Tensor, tag: bytes) -> Optional[Tensor]:
    """``ciphertext || tag`` as CPU ``uint8`` over ``sealed``'s own memory, if its tag follows it."""
    size = nbytes(sealed)
    start = sealed.storage_offset() * sealed.element_size()
    if sealed.is_contiguous() and sealed.numel() and \
            sealed.untyped_storage().nbytes() >= start + size + TAG_BYTES:
        data = sealed.detach().reshape(-1).view(torch.uint8)
        whole = data.as_strided((size + TAG_BYTES, ), (1, ), data.storage_offset()).cpu()
        if whole[size:].numpy().tobytes() == tag:
            return whole
    return None


#: The ciphertexts :func:`seal` returned that are still alive, by ``id``.
_SEALED: 'weakref.WeakValueDictionary[int, Tensor]' = weakref.WeakValueDictionary()


def holds_its_tag(sealed: Any, tag: str) -> bool:
    """Whether ``sealed`` is still the ciphertext :func:`seal` made: its tag (hex) follows it.

    What :func:`seal` returns, and what ``torch.save`` then ``torch.load`` give
    back, is laid out so; a tensor put in its place later is not.
    """
    if not isinstance(sealed, Tensor):
        return False
    return _SEALED.get(id(sealed)) is sealed or sealed.numel() == 0 or \
        _with_tag(sealed, bytes.fromhex(tag)) is not None


def _sealed_bytes(sealed: Tensor, tag: bytes) -> Tuple[Tensor, bool]:
    """``ciphertext || tag`` of a sealed tensor as CPU ``uint8``, and whether only we can change it.

    A sealed tensor is saved as a view of a buffer where its tag follows it: that
    memory is used as it is. Anything else is copied.
    """
    whole = _with_tag(sealed, tag)
    if whole is not None:
        storage = sealed.untyped_storage()
        return whole, storage.device.type != 'cpu' or _private(storage)
    return torch.cat([raw_bytes(sealed), torch.tensor(list(tag), dtype=torch.uint8)]), True


def _fits(into: Any, sealed: Tensor) -> bool:
    return isinstance(into, Tensor) and into.device.type == 'cpu' and \
        into.dtype == sealed.dtype and into.shape == sealed.shape and into.is_contiguous()


class _Item:
    """One tensor of a group being opened: its ciphertext, tag, associated data and target."""

    def __init__(self, index: int, path: Path, sealed: Tensor, tag: bytes, data: bytes,
                 into: Any) -> None:
        self.index, self.path, self.sealed, self.tag, self.aad = index, path, sealed, tag, data
        self.size = nbytes(sealed)
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
    spans = [(item.whole.data_ptr(), item.size + TAG_BYTES) for item in items]
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
        header: from :func:`~mmseg_keyprotect.checkpoint.format.read_header`.
        tensors: path -> ciphertext, every tensor the group holds now.
        key: the key to open with.
        descriptor: the protection of what the group is loaded into; ``None``
            skips this check (the caller compares descriptors itself).
        where: how to name the group in messages (``'checkpoint state_dict'``).
        into: path -> where that tensor's plaintext goes: a contiguous CPU
            tensor of its dtype and shape. Used only where no other process can
            change the ciphertext (not shared memory, not a mapped file), and
            where no target overlaps another tensor's bytes.
        subset: ``tensors`` may hold only some of the group's tensors (the
            sealing side opening what it sealed again); the rest is not opened.

    Raises:
        EncryptedWeightsError: one line naming what failed: another key, an
            edited header or descriptor, a tensor missing or added.
    """

    def __init__(self, header: Mapping[str, Any], tensors: Mapping[Path, Tensor],
                 key: SecretKey, descriptor: Optional[Descriptor], where: str,
                 into: Optional[Mapping[Path, Tensor]] = None, subset: bool = False) -> None:
        entries = _check_header(header, tensors, key, descriptor, where, subset)
        digest, salt, into = descriptor_digest(header['protection']), header['salt'], into or {}
        self.where = where
        self._gcm = GCM(key.derive_bytes(f'seal/{salt}', 32))
        self._items = [_Item(i, path, tensors[path], bytes.fromhex(tag),
                             aad(salt, digest, path, tensors[path]), into.get(path))
                       for i, (path, tag) in enumerate(entries) if path in tensors]
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
            self._raise_first(parallel(lambda i: self._check(self._items[i], False),
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
        opened = parallel(lambda i: self._decrypt(self._items[i]), self._sizes)
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
        parallel(lambda i: self._items[i].in_place and self._gcm.encrypt_in_place(
            self._items[i].index, self._items[i].ciphertext(), self._items[i].aad), self._sizes)

    def _check(self, item: _Item, in_place: bool) -> bool:
        return self._gcm.check(item.index, item.ciphertext(), item.tag, item.aad, in_place)

    def _decrypt(self, item: _Item) -> Optional[Tensor]:
        if item.in_place:
            return item.into if self._check(item, True) else None
        out = item.into if item.into is not None else \
            torch.empty(item.size, dtype=torch.uint8).view(item.sealed.dtype) \
            .reshape(item.sealed.shape)
        ok = self._gcm.decrypt(item.index, item.whole.numpy(), flat(out), item.aad)
        return out if ok else None

    def _raise_first(self, results: Sequence[Any], changed: bool = False) -> None:
        for item, result in zip(self._items, results):
            if result is None or result is False:
                if changed:
                    raise EncryptedWeightsError(
                        f'{self.where}: tensor {show_path(item.path)!r} changed while it was being '
                        'opened (after every tag was verified): its target holds garbage')
                raise EncryptedWeightsError(
                    f'{self.where}: tensor {show_path(item.path)!r} failed authentication: its bytes '
                    'were changed (e.g. a flipped bit) or it comes from another checkpoint')


def _check_header(header: Mapping[str, Any], tensors: Mapping[Path, Tensor], key: SecretKey,
                  descriptor: Optional[Descriptor], where: str,
                  subset: bool = False) -> List[Tuple[Path, str]]:
    """The header's ``(path, tag)`` entries, after checking what needs no decryption."""
    if header['key'] != key.fingerprint:
        raise EncryptedWeightsError(
            f'{where} is encrypted with the key of fingerprint {header["key"]}, but the model '
            f'was given the key of fingerprint {key.fingerprint}; give the key the model was '
            'trained with')
    if not hmac.compare_digest(str(header.get('mac')), header_mac(key, header)):
        raise EncryptedWeightsError(f'{where}: the header of the sealed weights failed '
                                    'authentication: it was edited')
    sealed_for = header['protection']
    if descriptor is not None and sorted_descriptor(descriptor) != sealed_for:
        from ..protection.descriptor import format_protection
        raise EncryptedWeightsError(
            f'{where} was sealed for protection {format_protection(sealed_for)}, but is being '
            f'loaded into {format_protection(sorted_descriptor(descriptor))}; load it with the '
            'config it was trained with')
    entries = [(tuple(path), tag) for path, tag in header['tensors']]
    expected = {path for path, _ in entries}
    missing = [] if subset else sorted(map(show_path, expected - set(tensors)))
    extra = sorted(map(show_path, set(tensors) - expected))
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

    ``SealedGroup(...).open()``; the arguments are :class:`SealedGroup`'s.

    Returns:
        dict: path -> plaintext tensor (CPU).

    Raises:
        EncryptedWeightsError: one line naming what failed: another key, an
            edited header or descriptor, a tensor missing, added, changed
            (flipped bit) or taken from another checkpoint.
    """
    return SealedGroup(header, tensors, key, descriptor, where, into).open()
