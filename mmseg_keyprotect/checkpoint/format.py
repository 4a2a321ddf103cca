"""The sealed checkpoint format: names, the canonical encoding, associated data, MACs, headers.

A sealed checkpoint is an ordinary mmengine checkpoint (a dict written by
``torch.save``) in which every tensor is AES-256-GCM ciphertext of the same
dtype and shape, grouped (:mod:`~mmseg_keyprotect.checkpoint.group`):

* a **model group** is a model's ``state_dict`` (``checkpoint['state_dict']``,
  or the ``module.*`` copy inside ``ema_state_dict``); its header is the
  ``uint8`` tensor at ``prefix + MARKER``, and the model's load hook opens it;
* a **tree group** is every other tensor of one checkpoint entry (the optimizer
  state, ...), with its header at ``entry[TREE_MARKER]``;
* ``meta[META_KEY]`` is the non-secret protection descriptor, ``meta[META_MAC_KEY]``
  its HMAC under the key, and ``meta[MANIFEST_KEY]`` the file's manifest
  (:mod:`~mmseg_keyprotect.checkpoint.manifest`): the MAC of the whole file.

A group's header is JSON stored as a ``uint8`` tensor: the format, the kind,
the key fingerprint, a fresh random salt (the group's own AES key is derived
from it), the protection descriptor, ``[path, tag]`` per tensor and an
HMAC-SHA256 of all of it. Tensor ``i`` uses nonce ``i`` under the group's key;
its associated data (:func:`aad`) binds the format, the salt, the descriptor's
digest, the tensor's path, dtype and shape.

Everything that is hashed, MAC'd or bound as associated data is encoded by
:func:`canonical` (JSON with sorted keys, no spaces), and a descriptor is first
put in its one order by :func:`sorted_descriptor`.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from torch import Tensor

from ..keys import SecretKey

__all__ = [
    'MARKER', 'TREE_MARKER', 'META_KEY', 'META_MAC_KEY', 'MANIFEST_KEY', 'FORMAT',
    'EncryptedWeightsError', 'Descriptor', 'TreePath', 'canonical', 'sorted_descriptor',
    'descriptor_digest', 'descriptor_mac', 'aad', 'nonce', 'header_mac', 'read_header',
    'check_fields',
    'show_path', 'is_sealed', 'raw_bytes'
]

#: Entry that holds a model group's header (a ``uint8`` tensor of JSON), after its prefix.
MARKER = 'keyprotect_encryption'
#: Entry of a checkpoint entry (e.g. ``checkpoint['optimizer']``) holding its tree group's header.
TREE_MARKER = 'keyprotect_sealed'
#: Field of ``checkpoint['meta']`` holding the protection descriptor.
META_KEY = 'key_protection'
#: Field of ``checkpoint['meta']`` holding the descriptor's HMAC (``encrypt_weights`` only).
META_MAC_KEY = 'key_protection_mac'
#: Field of ``checkpoint['meta']`` holding the file's manifest (``encrypt_weights`` only).
MANIFEST_KEY = 'keyprotect_manifest'
#: Version of a group's sealed format.
FORMAT = 'mmseg-keyprotect/aes-256-gcm/v2'

Descriptor = List[Dict[str, Any]]
TreePath = Tuple[Any, ...]

#: Fields every group header has (checked before any is read).
_HEADER_FIELDS = {'format': str, 'kind': str, 'key': str, 'salt': str,
                  'protection': (list, type(None)), 'tensors': list, 'mac': str}


class EncryptedWeightsError(ValueError):
    """Sealed weights could not be opened: wrong key, tampering, or plaintext refused."""


def canonical(value: Any) -> bytes:
    """The one byte encoding of JSON-like values: sorted keys, no spaces."""
    return json.dumps(value, sort_keys=True, separators=(',', ':')).encode()


def sorted_descriptor(descriptor: Optional[Descriptor]) -> Optional[Descriptor]:
    """A descriptor's entries in their one order (by their canonical encoding)."""
    if descriptor is None:
        return None
    return sorted((dict(entry) for entry in descriptor), key=canonical)


def descriptor_digest(descriptor: Optional[Descriptor]) -> str:
    """SHA-256 of the sorted descriptor, bound to every sealed tensor."""
    return hashlib.sha256(canonical(sorted_descriptor(descriptor))).hexdigest()


def descriptor_mac(key: SecretKey, descriptor: Descriptor) -> str:
    """HMAC of the descriptor stored in ``meta[META_MAC_KEY]``: its sorted entries, one a line."""
    lines = b'\n'.join(canonical(entry) for entry in sorted_descriptor(descriptor))
    return hmac.new(key.derive_bytes('seal/meta-descriptor'), lines, hashlib.sha256).hexdigest()


def aad(salt: str, digest: str, path: Sequence[Any], tensor: Tensor) -> bytes:
    """Associated data of one sealed tensor."""
    return canonical([FORMAT, salt, digest, list(path), str(tensor.dtype), list(tensor.shape)])


def nonce(index: int) -> bytes:
    """The nonce of tensor ``index`` of a group (each group has its own key)."""
    return index.to_bytes(12, 'big')


def header_mac(key: SecretKey, header: Mapping[str, Any]) -> str:
    """HMAC-SHA256 of every field of a group header but ``mac``."""
    body = {k: v for k, v in header.items() if k != 'mac'}
    return hmac.new(key.derive_bytes('seal/header'), canonical(body), hashlib.sha256).hexdigest()


def raw_bytes(tensor: Tensor) -> Tensor:
    """The bytes of ``tensor`` as a flat ``uint8`` CPU tensor (a view when it can be)."""
    source = tensor.detach().cpu().contiguous()
    return source.reshape(-1).view(torch.uint8) if source.numel() else \
        torch.zeros(0, dtype=torch.uint8)


def read_header(marker: Any, where: str = 'the file') -> Dict[str, Any]:
    """Parse a group header stored under :data:`MARKER` or :data:`TREE_MARKER` (no key needed).

    Raises:
        EncryptedWeightsError: if it is not a header of this format, or lacks a field.
    """
    try:
        header = json.loads(raw_bytes(marker).numpy().tobytes().decode())
    except (TypeError, ValueError, AttributeError, RuntimeError):
        header = None
    if not isinstance(header, dict) or header.get('format') != FORMAT:
        raise EncryptedWeightsError(f'{where}: {MARKER!r} is not a {FORMAT} header (written by '
                                    'another version of mmseg-keyprotect, or damaged)')
    check_fields(header, _HEADER_FIELDS, f'{where}: the sealed header')
    if not all(isinstance(entry, list) and len(entry) == 2 and isinstance(entry[0], list)
               and isinstance(entry[1], str) for entry in header['tensors']):
        raise EncryptedWeightsError(f'{where}: the sealed header\'s \'tensors\' field is not a '
                                    'list of [path, tag]: it was edited or damaged')
    return header


def check_fields(document: Mapping[str, Any], fields: Mapping[str, Any], what: str) -> None:
    """Raise unless ``document`` has every field of ``fields`` (name -> type or types).

    Raises:
        EncryptedWeightsError: ``'{what} has no valid {field!r} field: ...'``.
    """
    for field, kind in fields.items():
        if field not in document or not isinstance(document[field], kind):
            raise EncryptedWeightsError(f'{what} has no valid {field!r} field: it was edited or '
                                        'damaged')


def show_path(path: TreePath) -> str:
    """``('state', 0, 'momentum_buffer')`` -> ``'state.0.momentum_buffer'``."""
    return '.'.join(map(str, path))


def is_sealed(state_dict: Mapping[str, Any], prefix: str = '') -> bool:
    """Whether ``state_dict`` holds a sealed model group at ``prefix``."""
    return prefix + MARKER in state_dict
