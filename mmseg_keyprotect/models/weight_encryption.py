"""Authenticated encryption of a model's weights, and of everything a checkpoint derives from them.

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

:func:`attach_weight_encryption` gives a model a ``load_state_dict`` pre-hook
that opens a sealed ``state_dict`` (whichever way it is loaded: mmengine's
``load_from``/``--resume``/``load_checkpoint``, mmseg's ``init_model``,
``model.load_state_dict``) after checking, before any weight is copied, the
key fingerprint, the header's HMAC, the descriptor, the set of tensors and every
tag; each failure is one :class:`EncryptedWeightsError` naming what failed. A
``state_dict`` without a header (plaintext, or a header stripped) is refused
unless the protection allows plaintext weights (``allow_plaintext_weights``).

Sealing happens where a run writes files: mmengine's ``Runner.save_checkpoint``
through :class:`~mmseg_keyprotect.engine.hooks.CheckpointSealHook`, which seals
the ``state_dict``, the optimizer state, EMA/averaged models and every other
tensor of the checkpoint. In memory, ``model.state_dict()`` stays plain, as
the weights in memory are (mmengine's EMA warm-up copies through it); to write
weights by hand, use :func:`sealed_state_dict`. Pickling the keyed model
itself (``torch.save(model)``) is refused.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from torch import Tensor, nn

from ..keyed import KeyedComponent
from ..keys import KeySpec, SecretKey, resolve_key

__all__ = [
    'MARKER', 'FORMAT', 'EncryptedWeightsError', 'Descriptor', 'seal', 'open_sealed',
    'read_header', 'attach_weight_encryption', 'weight_encryption_key',
    'weight_encryption_fingerprint', 'seal_state_dict', 'sealed_state_dict', 'describe_module',
    'is_sealed', 'mark_checkpoints_sealed', 'checkpoints_sealed'
]

#: Entry that holds a sealed group's header (a ``uint8`` tensor of JSON).
MARKER = 'keyprotect_encryption'
#: Version of the sealed format.
FORMAT = 'mmseg-keyprotect/aes-256-gcm/v2'

Descriptor = List[Dict[str, Any]]
Path = Tuple[Any, ...]

_SALT_BYTES = 16
_TAG_BYTES = 16
_ATTR = '_keyprotect_weight_encryption'


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


def _encrypt(aead: AESGCM, index: int, raw: Tensor, aad: bytes) -> Tensor:
    """``ciphertext || tag`` of ``raw`` in one new ``uint8`` tensor (no other copy)."""
    out = torch.empty(raw.numel() + _TAG_BYTES, dtype=torch.uint8)
    if hasattr(aead, 'encrypt_into'):  # cryptography >= 45: no intermediate bytes
        aead.encrypt_into(_nonce(index), raw.numpy(), aad, out.numpy())
    else:
        out.numpy()[:] = np.frombuffer(aead.encrypt(_nonce(index), raw.numpy().tobytes(), aad),
                                       np.uint8)
    return out


def _decrypt(aead: AESGCM, index: int, sealed: Tensor, tag: bytes, aad: bytes) -> Tensor:
    """The plaintext bytes of a sealed tensor (``InvalidTag`` if anything differs)."""
    size = sealed.numel() * sealed.element_size()
    storage = sealed.untyped_storage()
    whole = torch.empty(0, dtype=torch.uint8).set_(storage) if storage.device.type == 'cpu' \
        else None
    # A sealed tensor is saved as a view of ``ciphertext || tag``: use that storage as it is.
    if whole is None or sealed.storage_offset() != 0 or not sealed.is_contiguous() or \
            whole.numel() != size + _TAG_BYTES or whole[size:].numpy().tobytes() != tag:
        whole = torch.cat([_raw(sealed), torch.tensor(list(tag), dtype=torch.uint8)])
    plain = torch.empty(size, dtype=torch.uint8)
    if hasattr(aead, 'decrypt_into'):
        aead.decrypt_into(_nonce(index), whole.numpy(), aad, plain.numpy())
    else:
        plain.numpy()[:] = np.frombuffer(aead.decrypt(_nonce(index), whole.numpy().tobytes(),
                                                      aad), np.uint8)
    return plain


def _parallel(work: Callable[[int], Any], count: int) -> List[Any]:
    """``[work(0), ..., work(count - 1)]`` on a thread per core (AES-GCM releases the GIL)."""
    with ThreadPoolExecutor(max_workers=max(1, min(count, os.cpu_count() or 1))) as pool:
        return list(pool.map(work, range(count)))


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
        the CPU) and the header to store under :data:`MARKER`.
    """
    salt = os.urandom(_SALT_BYTES).hex()
    descriptor = _sorted(descriptor)
    digest = _digest(descriptor)
    aead = AESGCM(key.derive_bytes(f'seal/{salt}', 32))
    sealed, entries = [], []
    outs = _parallel(lambda i: _encrypt(aead, i, _raw(tensors[i][1]),
                                        _aad(salt, digest, *tensors[i])), len(tensors))
    for (path, tensor), out in zip(tensors, outs):
        size = out.numel() - _TAG_BYTES
        # the ciphertext keeps dtype and shape; its storage also holds the tag (16 bytes)
        sealed.append(out[:size].view(tensor.dtype).reshape(tensor.shape))
        entries.append([list(path), out[size:].numpy().tobytes().hex()])
    header = {'format': FORMAT, 'kind': kind, 'key': key.fingerprint, 'salt': salt,
              'protection': descriptor, 'tensors': entries}
    header['mac'] = _header_mac(key, header)
    return sealed, torch.tensor(list(_canonical(header)), dtype=torch.uint8)


def read_header(marker: Any, where: str = 'the file') -> Dict[str, Any]:
    """Parse a header stored under :data:`MARKER` (no key needed: it holds no secret).

    Raises:
        EncryptedWeightsError: if it is not a header of this format.
    """
    try:
        header = json.loads(bytes(_raw(marker).tolist()).decode())
    except (TypeError, ValueError, AttributeError, RuntimeError):
        header = None
    if not isinstance(header, dict) or header.get('format') != FORMAT:
        raise EncryptedWeightsError(f'{where}: {MARKER!r} is not a {FORMAT} header (written by '
                                    'another version of mmseg-keyprotect, or damaged)')
    return header


def open_sealed(header: Mapping[str, Any], tensors: Mapping[Path, Tensor], key: SecretKey,
                descriptor: Optional[Descriptor], where: str) -> Dict[Path, Tensor]:
    """Check and decrypt a sealed group; nothing is returned unless all of it is authentic.

    Args:
        header: from :func:`read_header`.
        tensors: path -> ciphertext, every tensor the group holds now.
        key: the key to open with.
        descriptor: the protection of what the group is loaded into; ``None``
            skips this check (the caller compares descriptors itself).
        where: how to name the group in messages (``'checkpoint state_dict'``).

    Returns:
        dict: path -> plaintext tensor (CPU).

    Raises:
        EncryptedWeightsError: one line naming what failed: another key, an
            edited header or descriptor, a tensor missing, added, changed
            (flipped bit) or taken from another checkpoint.
    """
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
    digest = _digest(sealed_for)
    aead = AESGCM(key.derive_bytes(f'seal/{header["salt"]}', 32))

    def decrypt(i: int) -> Optional[Tensor]:
        path, tag = entries[i]
        try:
            return _decrypt(aead, i, tensors[path], bytes.fromhex(tag),
                            _aad(header['salt'], digest, path, tensors[path]))
        except InvalidTag:
            return None

    opened = {}
    for (path, _), plain in zip(entries, _parallel(decrypt, len(entries))):
        if plain is None:
            raise EncryptedWeightsError(
                f'{where}: tensor {_show(path)!r} failed authentication: its bytes were '
                'changed (e.g. a flipped bit) or it comes from another checkpoint')
        opened[path] = plain.view(tensors[path].dtype).reshape(tensors[path].shape)
    return opened


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


# --------------------------------------------------------------------- the model side
def describe_module(module: nn.Module) -> Descriptor:
    """The protection a model carries: its keyed parts and its weight encryption.

    :meth:`~mmseg_keyprotect.protection.Protection.describe` of the module
    alone: each keyed part describes itself, and a module that encrypts its
    weights adds ``{'type': 'WeightEncryption', 'key': FINGERPRINT}``.
    Non-secret: types, points, block sizes and key fingerprints.
    """
    from ..protection import Protection
    return Protection.of(module).describe()


class _WeightEncryption(KeyedComponent):
    """The model's load pre-hook; holds the key (never printed, never pickled in clear).

    A keyed part of the model's protection: it describes itself as
    ``{'type': 'WeightEncryption', 'key': FINGERPRINT}``. Key conditions do
    not change it: the weights were opened with the correct key when loaded.
    """

    def __init__(self, key: SecretKey, allow_plaintext: bool) -> None:
        self._init_key(key)
        self.allow_plaintext = allow_plaintext

    @property
    def key(self) -> SecretKey:
        """The key the weights are sealed with."""
        return self.correct_key

    def describe(self) -> Dict[str, Any]:
        """``{'type': 'WeightEncryption', 'key': FINGERPRINT}``."""
        return {'type': 'WeightEncryption', 'key': self.correct_key.fingerprint}

    def __repr__(self) -> str:
        return f'WeightEncryption(key=<fingerprint {self.key.fingerprint}>)'

    def open(self, module: nn.Module, state_dict: Dict[str, Any], prefix: str,
             local_metadata: Any, strict: bool, missing_keys: List[str],
             unexpected_keys: List[str], error_msgs: List[str]) -> None:
        where = f'state_dict{" at " + repr(prefix) if prefix else ""}'
        names = [name for name, value in state_dict.items()
                 if name.startswith(prefix) and isinstance(value, Tensor)
                 and name != prefix + MARKER]
        marker = state_dict.get(prefix + MARKER)
        if marker is None:
            if self.allow_plaintext or not names:
                return
            raise EncryptedWeightsError(
                f'{where} is not sealed (plaintext weights, or its {MARKER!r} header was '
                'stripped): refusing to load it into a model with encrypt_weights=True; to '
                'start from unencrypted weights on purpose, set '
                'protection.allow_plaintext_weights=True (pretrained backbones through '
                'init_cfg need nothing)')
        header = read_header(marker, where)
        if header.get('kind') != 'model':
            raise EncryptedWeightsError(f'{where}: the header is not a model state_dict\'s')
        opened = open_sealed(header, {(name[len(prefix):], ): state_dict[name] for name in names},
                             self.key, describe_module(module), where)
        del state_dict[prefix + MARKER]
        for (name, ), tensor in opened.items():
            state_dict[prefix + name] = tensor


def attach_weight_encryption(module: nn.Module, key: KeySpec,
                             allow_plaintext: bool = False) -> None:
    """Make ``module`` open sealed ``state_dict`` s with ``key`` (and refuse plaintext).

    Args:
        module: usually the segmentor (the root of what is saved).
        key: the secret key or its source. A seed key is refused: it is
            published, so encrypting with it protects nothing.
        allow_plaintext: load an unsealed ``state_dict`` as it is (to start
            from unencrypted weights on purpose). Defaults to False.

    Raises:
        ValueError: if the key is missing or a seed key, or the module
            already encrypts its weights.
    """
    if getattr(module, _ATTR, None) is not None:
        raise ValueError(f'{type(module).__name__} already encrypts its weights')
    secret = resolve_key(key, 'weight encryption')
    if secret.source == 'seed':
        raise ValueError('encrypt_weights=True with a seed key (key=dict(seed=...)): a seed is '
                         'a published key, so the weights would be encrypted with a key anyone '
                         'can find; use key=dict(file=...) or key=dict(env=...) (tools/keygen.py)')
    hook = _WeightEncryption(secret, allow_plaintext)
    module._register_load_state_dict_pre_hook(hook.open, with_module=True)
    # Not an nn.Module attribute: adds nothing to state_dict, modules() or repr.
    object.__setattr__(module, _ATTR, hook)


#: Attribute set on a model whose training writes only sealed checkpoints.
SEALING_ATTR = '_keyprotect_checkpoints_sealed'


def mark_checkpoints_sealed(module: nn.Module) -> None:
    """Let an ``encrypt_weights`` model train: whatever saves it seals what it writes.

    :class:`~mmseg_keyprotect.engine.hooks.CheckpointSealHook` calls it when a
    run starts; code that trains without writing checkpoints (or saves only
    :func:`sealed_state_dict`) may call it too.
    """
    object.__setattr__(module, SEALING_ATTR, True)


def checkpoints_sealed(module: nn.Module) -> bool:
    """Whether :func:`mark_checkpoints_sealed` was called on ``module``."""
    return bool(getattr(module, SEALING_ATTR, False))


def weight_encryption_key(module: nn.Module) -> Optional[SecretKey]:
    """The key ``module``'s weights are encrypted with, or None."""
    hook = getattr(module, _ATTR, None)
    return None if hook is None else hook.key


def weight_encryption_fingerprint(module: nn.Module) -> Optional[str]:
    """The fingerprint of the key ``module``'s weights are encrypted with, or None."""
    key = weight_encryption_key(module)
    return None if key is None else key.fingerprint


def seal_state_dict(state_dict: Dict[str, Any], key: SecretKey, descriptor: Descriptor,
                    prefix: str = '', names: Optional[Sequence[str]] = None) -> None:
    """Seal a model's ``state_dict`` in place (header at ``prefix + MARKER``).

    Args:
        state_dict: holds the model's tensors as ``prefix + name``.
        key: the key to seal with.
        descriptor: the model's protection (:func:`describe_module`).
        prefix: where the model's names start (``'module.'`` in an EMA copy).
        names: the model's names (relative to ``prefix``); by default every
            tensor under ``prefix``.
    """
    if names is None:
        names = [name[len(prefix):] for name, value in state_dict.items()
                 if name.startswith(prefix) and isinstance(value, Tensor)]
    sealed, header = seal([((name, ), state_dict[prefix + name]) for name in names], key,
                          descriptor, 'model')
    for name, tensor in zip(names, sealed):
        state_dict[prefix + name] = tensor
    state_dict[prefix + MARKER] = header


def sealed_state_dict(module: nn.Module) -> Dict[str, Tensor]:
    """``module.state_dict()`` sealed with its weight-encryption key, for saving by hand.

    Raises:
        ValueError: if ``module`` does not encrypt its weights.
    """
    key = weight_encryption_key(module)
    if key is None:
        raise ValueError(f'{type(module).__name__} does not encrypt its weights '
                         '(protection.encrypt_weights=True)')
    state_dict = module.state_dict()
    seal_state_dict(state_dict, key, describe_module(module))
    return state_dict
