"""Weight encryption of a model: it opens sealed ``state_dict`` s with its key, refuses others.


A channel permutation or a block cipher leaves stolen weights usable: the
attacks in ``docs/security.md`` recover most of the correct-key accuracy from
a few labelled images. Encrypting the weights takes that advantage away for a
stolen *file*: without the key its tensors are indistinguishable from random
bits, and with a wrong or tampered file nothing is loaded.

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
the weights in memory are (mmengine's EMA warm-up copies through it), and warns
once outside the runner (:mod:`~mmseg_keyprotect.models.save_guard`); to write
weights by hand, use :func:`sealed_state_dict`, or
:func:`~mmseg_keyprotect.apis.export_sealed` for deployment. Pickling the keyed
model or any part of it (``torch.save(model.backbone)``) is refused.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import Tensor, nn

from ..keyed import KeyedWeights
from ..keys import KeySpec, SecretKey, resolve_key
from ..checkpoint.format import MARKER, Descriptor, EncryptedWeightsError, read_header
from ..checkpoint.group import open_sealed
from ..checkpoint.scope import sealing
from ..checkpoint.tree import seal_state_dict
from ..protection import Protection

__all__ = [
    'attach_weight_encryption', 'weight_encryption_key', 'sealed_state_dict', 'describe_module',
    'mark_checkpoints_sealed', 'checkpoints_sealed'
]

Path = Tuple[Any, ...]
_ATTR = '_keyprotect_weight_encryption'


def describe_module(module: nn.Module) -> Descriptor:
    """The protection a model carries: its keyed parts and its weight encryption.

    :meth:`~mmseg_keyprotect.protection.Protection.describe` of the module
    alone: each keyed part describes itself, and a module that encrypts its
    weights adds ``{'type': 'WeightEncryption', 'key': FINGERPRINT}``.
    Non-secret: types, points, block sizes and key fingerprints.
    """
    return Protection.of(module).describe()


class _WeightEncryption(KeyedWeights):
    """The model's load pre-hook; holds the key (never printed, never pickled in clear).

    A keyed part of the model's protection: it describes itself as
    ``{'type': 'WeightEncryption', 'key': FINGERPRINT}``. Key conditions do
    not change it: the weights were opened with the correct key when loaded.
    """

    def __init__(self, key: SecretKey, allow_plaintext: bool) -> None:
        self._init_key(key)
        self.allow_plaintext = allow_plaintext

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
                             self.key, describe_module(module), where,
                             into=_own_tensors(module, local_metadata))
        del state_dict[prefix + MARKER]
        for (name, ), tensor in opened.items():
            # decrypted into the module's own tensor: load_state_dict's copy finds it in place
            state_dict[prefix + name] = tensor


def _own_tensors(module: nn.Module, local_metadata: Any) -> Dict[Path, Tensor]:
    """``(name, )`` -> the module's own parameter or buffer, where the loader copies into it.

    Empty where ``load_state_dict`` replaces tensors instead of copying into them
    (``assign=True``, or torch's swap-on-load): there the plaintext needs its own memory.
    """
    swaps = getattr(getattr(torch, '__future__', None), 'get_swap_module_params_on_conversion',
                    lambda: True)
    if (local_metadata or {}).get('assign_to_params_buffers', False) or swaps():
        return {}
    with sealing():
        own = module.state_dict(keep_vars=True)
    return {(name, ): value for name, value in own.items() if isinstance(value, Tensor)}


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
    if Protection.of(module).weight_encryption is not None:
        raise ValueError(f'{type(module).__name__} already encrypts its weights')
    secret = resolve_key(key, 'weight encryption')
    if secret.published:
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
    """The key ``module``'s weights are encrypted with, or None
    (:attr:`Protection.weight_encryption <mmseg_keyprotect.protection.Protection.weight_encryption>`)."""
    part = Protection.of(module).weight_encryption
    return None if part is None else part.key


def sealed_state_dict(module: nn.Module) -> Dict[str, Tensor]:
    """``module.state_dict()`` sealed with its weight-encryption key, for saving by hand.

    Raises:
        ValueError: if ``module`` does not encrypt its weights.
    """
    key = weight_encryption_key(module)
    if key is None:
        raise ValueError(f'{type(module).__name__} does not encrypt its weights '
                         '(protection.encrypt_weights=True)')
    with sealing():
        state_dict = module.state_dict()
    seal_state_dict(state_dict, key, describe_module(module))
    return state_dict
