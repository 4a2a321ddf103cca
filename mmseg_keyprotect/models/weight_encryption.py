"""Keyed encryption of a model's weights at rest (in its ``state_dict`` and checkpoints).

A channel permutation or a block cipher leaves the stolen weights usable: the
attacks in ``docs/security.md`` recover most of the correct-key accuracy from
a few labelled images by learning the inverse transform. Encrypting the
weights takes that advantage away for a stolen *checkpoint*: without the key
its tensors are indistinguishable from random bits, so the thief starts from
scratch.

:func:`attach_weight_encryption` adds two hooks to a module:

* a ``state_dict`` hook: every tensor ``name`` leaves as ``bits XOR
  SHAKE-256(HMAC(key, 'weights/' + nonce + '/' + name))`` (same dtype and
  shape), with a fresh random 16-byte ``nonce`` per ``state_dict()`` call (so two
  checkpoints never share a keystream: XORing them reveals nothing), and an
  entry ``keyprotect_encryption`` holds the key's fingerprint and the nonce
  (neither is secret); this covers
  mmengine's checkpoints (``get_state_dict`` runs the hooks) and
  ``torch.save(model.state_dict())``;
* a load pre-hook: a ``state_dict`` carrying ``keyprotect_encryption`` is
  decrypted with the module's key before the weights are copied, whichever way
  it is loaded (mmengine's ``load_from``/``--resume``/``load_checkpoint``,
  mmseg's ``init_model``, ``model.load_state_dict``); the wrong key raises
  :class:`~mmseg_keyprotect.engine.protection.KeyMismatchError`-like
  :class:`EncryptedWeightsError` naming both fingerprints. A ``state_dict``
  without the entry (pretrained weights, an unencrypted checkpoint) loads as is.

The weights in memory are plain: whoever can read the memory of a running,
keyed model gets them (and the key). This protects files, not processes.
"""
from __future__ import annotations

import hashlib
import os
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from torch import Tensor, nn

from ..keys import KeySpec, SecretKey, resolve_key

__all__ = ['attach_weight_encryption', 'EncryptedWeightsError', 'MARKER',
           'is_encrypted_state_dict', 'xor_tensor', 'weight_encryption_fingerprint']

#: ``state_dict`` entry that marks encrypted weights; holds the key fingerprint (non-secret).
MARKER = 'keyprotect_encryption'


class EncryptedWeightsError(ValueError):
    """Encrypted weights met a key other than the one they were encrypted with."""


_NONCE_BYTES = 16
_FINGERPRINT_BYTES = 8


def _keystream(key: SecretKey, nonce: bytes, name: str, length: int) -> np.ndarray:
    seed = key.derive_bytes(f'weights/{nonce.hex()}/{name}', 32)
    return np.frombuffer(hashlib.shake_256(seed).digest(length), dtype=np.uint8)


def xor_tensor(tensor: Tensor, key: SecretKey, name: str, nonce: bytes = b'') -> Tensor:
    """``tensor``'s bytes XOR the keystream of ``(nonce, name)``: encrypts and decrypts.

    Returns a new tensor of the same dtype, shape and device.
    """
    source = tensor.detach().cpu().contiguous()
    raw = source.reshape(-1).view(torch.uint8).numpy() if source.numel() else \
        np.zeros(0, np.uint8)
    mixed = np.bitwise_xor(raw, _keystream(key, nonce, name, raw.size))
    out = torch.from_numpy(mixed.copy()).view(source.dtype).reshape(source.shape)
    return out.to(tensor.device)


def _marker(key: SecretKey, nonce: bytes) -> Tensor:
    return torch.tensor(list(bytes.fromhex(key.fingerprint) + nonce), dtype=torch.uint8)


def is_encrypted_state_dict(state_dict: Dict[str, Any], prefix: str = '') -> bool:
    """Whether ``state_dict`` holds weights encrypted by :func:`attach_weight_encryption`."""
    return prefix + MARKER in state_dict


class _WeightEncryption:
    """The pair of hooks; holds the key (never printed)."""

    def __init__(self, key: SecretKey) -> None:
        self.key = key

    def __repr__(self) -> str:
        return f'WeightEncryption(key=<fingerprint {self.key.fingerprint}>)'

    def _names(self, state_dict: Dict[str, Any], prefix: str) -> List[str]:
        return [name for name, value in state_dict.items()
                if name.startswith(prefix) and isinstance(value, Tensor)
                and name != prefix + MARKER]

    def encrypt(self, module: nn.Module, state_dict: Dict[str, Any], prefix: str,
                local_metadata: Any) -> Dict[str, Any]:
        nonce = os.urandom(_NONCE_BYTES)
        for name in self._names(state_dict, prefix):
            state_dict[name] = xor_tensor(state_dict[name], self.key, name[len(prefix):], nonce)
        state_dict[prefix + MARKER] = _marker(self.key, nonce)
        return state_dict

    def decrypt(self, module: nn.Module, state_dict: Dict[str, Any], prefix: str,
                local_metadata: Any, strict: bool, missing_keys: List[str],
                unexpected_keys: List[str], error_msgs: List[str]) -> None:
        marker = state_dict.pop(prefix + MARKER, None)
        if marker is None:
            return
        raw = bytes(marker.tolist())
        if len(raw) != _FINGERPRINT_BYTES + _NONCE_BYTES:
            raise EncryptedWeightsError(f'{prefix + MARKER!r} has {len(raw)} bytes, expected '
                                        f'{_FINGERPRINT_BYTES + _NONCE_BYTES}: not written by '
                                        'this version of mmseg_keyprotect')
        stored, nonce = raw[:_FINGERPRINT_BYTES].hex(), raw[_FINGERPRINT_BYTES:]
        if stored != self.key.fingerprint:
            raise EncryptedWeightsError(
                f'the weights are encrypted with the key of fingerprint {stored}, but the '
                f'model was given the key of fingerprint {self.key.fingerprint}; give the '
                'key the model was trained with')
        for name in self._names(state_dict, prefix):
            state_dict[name] = xor_tensor(state_dict[name], self.key, name[len(prefix):], nonce)


def attach_weight_encryption(module: nn.Module, key: KeySpec) -> None:
    """Encrypt ``module``'s ``state_dict`` with ``key`` and decrypt what it loads.

    Args:
        module: usually the segmentor (the root of what is saved).
        key: the secret key or its source.

    Raises:
        ValueError: if the key is missing or the module already encrypts its weights.
    """
    if getattr(module, '_keyprotect_weight_encryption', None) is not None:
        raise ValueError(f'{type(module).__name__} already encrypts its weights')
    hooks = _WeightEncryption(resolve_key(key, 'weight encryption'))
    module._register_state_dict_hook(hooks.encrypt)
    module._register_load_state_dict_pre_hook(hooks.decrypt, with_module=True)
    # Not an nn.Module attribute: adds nothing to state_dict, modules() or repr.
    object.__setattr__(module, '_keyprotect_weight_encryption', hooks)


def weight_encryption_fingerprint(module: nn.Module) -> Optional[str]:
    """The fingerprint of the key ``module``'s weights are encrypted with, or None."""
    hooks = getattr(module, '_keyprotect_weight_encryption', None)
    return None if hooks is None else hooks.key.fingerprint

