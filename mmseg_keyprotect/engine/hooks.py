"""Hooks that check a protected run and make every checkpoint it writes safe to steal.

:class:`KeyProtectionHook` (priority ``VERY_HIGH``)

* ``before_run``: :meth:`~mmseg_keyprotect.protection.Protection.check_sizes`
  on the runner's config, so a block size that does not divide a crop, pad or
  slide size fails before weights are initialised, a checkpoint is loaded or an
  iteration runs;
* ``before_save_checkpoint``: stores the non-secret protection descriptor as
  ``checkpoint['meta']['key_protection']``;
* ``after_load_checkpoint`` (``load_from``, ``--resume``, ``tools/test.py``):
  for a model with ``encrypt_weights``, authenticates the stored protection
  descriptor (an HMAC under the key) and refuses a checkpoint of another key,
  an edited descriptor or, unless allowed, an unsealed (plaintext) checkpoint;
  compares the descriptor with the model and dataloaders being run
  (:class:`~mmseg_keyprotect.protection.ProtectionMismatchError`); then
  opens the sealed optimizer state and every other sealed entry, all before
  mmengine copies a weight (the model's own ``state_dict`` is opened by the
  model's load hook, which checks it again).

:class:`CheckpointSealHook` (priority ``LOWEST``, so it sees what every other
hook added, e.g. ``EMAHook``'s ``ema_state_dict``)

* ``before_save_checkpoint``: with ``encrypt_weights``, stores the HMAC of
  the protection descriptor and seals every tensor of the checkpoint
  (:mod:`~mmseg_keyprotect.models.weight_encryption`): the model's
  ``state_dict`` (and its copy inside EMA/averaged models) as model groups,
  the optimizer state and any other entry as tree groups;
* ``before_train``: tells an ``encrypt_weights`` model that its checkpoints
  will be sealed; such a model refuses to train otherwise.

:func:`register_protection_hook` adds both. The key-condition loops and
:class:`~mmseg_keyprotect.engine.runner.KeyProtectedRunner` call it, so
protected configs using either need nothing else. Otherwise::

    custom_hooks = [dict(type='KeyProtectionHook'), dict(type='CheckpointSealHook')]

What "before any file is written" means with mmengine: the runner creates the
work_dir, its log file and (at the end of ``Runner.__init__``) the config dump
before any hook runs. Errors raised while building components (key files,
point paths, channel counts at build time) come before the config dump;
errors raised by these hooks come before any checkpoint, metric file or
training iteration.
"""
from __future__ import annotations

import hashlib
import hmac
import json
import logging
from typing import Any, Dict, List, Mapping, Optional, Tuple

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmseg.registry import HOOKS
from torch import Tensor, nn

from ..keys import SecretKey
from ..models.weight_encryption import (MARKER, EncryptedWeightsError, SealedGroup,
                                        describe_module, is_sealed, mark_checkpoints_sealed,
                                        read_header, seal, seal_state_dict)
from ..protection import Protection, ProtectionMismatchError, check_protection
from .checkpoint import install_safe_loaders

__all__ = [
    'KeyProtectionHook', 'CheckpointSealHook', 'register_protection_hook', 'META_KEY',
    'META_MAC_KEY', 'TREE_MARKER', 'seal_checkpoint', 'open_checkpoint', 'tensors_with_paths'
]

#: Field of ``checkpoint['meta']`` holding the protection descriptor.
META_KEY = 'key_protection'
#: Field of ``checkpoint['meta']`` holding the descriptor's HMAC (``encrypt_weights`` only).
META_MAC_KEY = 'key_protection_mac'
#: Entry of a checkpoint entry (e.g. ``checkpoint['optimizer']``) holding its sealed header.
TREE_MARKER = 'keyprotect_sealed'

TreePath = Tuple[Any, ...]


def _model(runner) -> nn.Module:
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def _current(runner) -> List[Dict[str, Any]]:
    """The descriptor of the runner's model and the dataloaders of its built loops."""
    return Protection.from_runner(runner).describe()


def _descriptor_mac(key: SecretKey, descriptor: List[Dict[str, Any]]) -> str:
    canonical = sorted(json.dumps(e, sort_keys=True, separators=(',', ':')) for e in descriptor)
    return hmac.new(key.derive_bytes('seal/meta-descriptor'), '\n'.join(canonical).encode(),
                    hashlib.sha256).hexdigest()


def tensors_with_paths(node: Any, path: TreePath = ()) -> List[Tuple[TreePath, Tensor]]:
    """Every tensor inside nested dicts/lists/tuples, with its path."""
    if isinstance(node, Tensor):
        return [(path, node)]
    if isinstance(node, Mapping):
        return [found for k, v in node.items()
                for found in tensors_with_paths(v, path + (k, ))]
    if isinstance(node, (list, tuple)):
        return [found for i, v in enumerate(node)
                for found in tensors_with_paths(v, path + (i, ))]
    return []


def _put(node: Any, path: TreePath, value: Tensor) -> None:
    for step in path[:-1]:
        node = node[step]
    if isinstance(node, tuple):
        raise TypeError('cannot replace a tensor inside a tuple')
    node[path[-1]] = value


def _thaw(node: Any) -> Any:
    """Tuples to lists, so tensors inside can be replaced (optimizer ``betas`` are not tensors)."""
    if isinstance(node, Mapping):
        for k in list(node):
            node[k] = _thaw(node[k])
        return node
    if isinstance(node, (list, tuple)) and tensors_with_paths(node):
        return [_thaw(v) for v in node]
    return node


def seal_checkpoint(checkpoint: Dict[str, Any], model: nn.Module, key: SecretKey,
                    descriptor: List[Dict[str, Any]]) -> None:
    """Seal every tensor of ``checkpoint`` in place (everything but ``meta``).

    Copies of the model's ``state_dict`` (``state_dict``, and ``module.*`` in
    ``ema_state_dict``) become model groups, opened by the model's load hook;
    every other tensor of an entry goes into one tree group per entry, under
    ``entry[TREE_MARKER]``.

    Raises:
        TypeError: if an entry that is not a dict holds tensors.
    """
    model_names = list(model.state_dict().keys())
    model_descriptor = describe_module(model)
    for name, entry in checkpoint.items():
        if name == 'meta' or not tensors_with_paths(entry):
            continue
        if not isinstance(entry, dict):
            raise TypeError(f'checkpoint[{name!r}] is a {type(entry).__name__} holding tensors; '
                            'only dict entries can be sealed')
        if model_names:
            prefixes = {k[:-len(model_names[0])] for k in entry
                        if isinstance(k, str) and k.endswith(model_names[0])}
            for prefix in sorted(prefixes):
                if all(isinstance(entry.get(prefix + n), Tensor) for n in model_names):
                    seal_state_dict(entry, key, model_descriptor, prefix, names=model_names)
        covered = _model_group_paths(entry)
        rest = [(path, t) for path, t in tensors_with_paths(_thaw(entry)) if path not in covered]
        if rest:
            sealed, header = seal(rest, key, descriptor, 'tree')
            for (path, _), tensor in zip(rest, sealed):
                _put(entry, path, tensor)
            entry[TREE_MARKER] = header


def _model_group_paths(entry: Mapping[str, Any]) -> set:
    """The paths of the sealed model groups' tensors and headers in ``entry``."""
    paths = set()
    for name in [k for k in entry if isinstance(k, str) and k.endswith(MARKER)]:
        prefix = name[:-len(MARKER)]
        header = read_header(entry[name], f'{MARKER!r} at {prefix!r}')
        paths |= {(prefix + path[0], ) for path, _ in header['tensors']} | {(name, )}
    return paths


def open_checkpoint(checkpoint: Dict[str, Any], key: SecretKey,
                    descriptor: List[Dict[str, Any]]) -> None:
    """Open every tree group of ``checkpoint`` in place (model groups stay for the model).

    Each tensor is decrypted over its own ciphertext where only this process can
    change that memory (otherwise into new memory), and checked as it is: if
    any tag of any group fails, every group is encrypted back as it was
    (:meth:`~mmseg_keyprotect.models.weight_encryption.SealedGroup.undo`) and
    nothing is written back.

    Raises:
        EncryptedWeightsError: naming the entry and what failed.
    """
    groups = []
    for name, entry in checkpoint.items():
        if not isinstance(entry, dict) or TREE_MARKER not in entry:
            continue
        where = f'checkpoint[{name!r}]'
        header = read_header(entry[TREE_MARKER], where)
        if header.get('kind') != 'tree':
            raise EncryptedWeightsError(f'{where}: {TREE_MARKER!r} is not a tree header')
        covered = _model_group_paths(entry) | {(TREE_MARKER, )}
        tensors = {path: t for path, t in tensors_with_paths(_thaw(entry)) if path not in covered}
        # decrypted in place: the loaded ciphertext's memory becomes the plaintext's
        groups.append((entry, SealedGroup(header, tensors, key, descriptor, where, into=tensors)))
    opened: List[Tuple[Dict[str, Any], SealedGroup, Dict[TreePath, Tensor]]] = []
    try:
        for entry, group in groups:
            opened.append((entry, group, group.open()))
    except EncryptedWeightsError:
        for _, group, _ in opened:
            group.undo()
        raise
    for entry, _, tensors in opened:
        del entry[TREE_MARKER]
        for path, tensor in tensors.items():
            _put(entry, path, tensor)


@HOOKS.register_module()
class KeyProtectionHook(Hook):
    """Check block alignment before a run; authenticate, check and open loaded checkpoints.

    Args:
        strict (bool): raise when a loaded checkpoint's protection differs from
            the config's. ``False`` only logs a warning (e.g. to fine-tune a
            model under a new key on purpose). Authentication failures of an
            ``encrypt_weights`` model always raise. Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict

    def before_run(self, runner) -> None:
        """Raise if a crop, pad or slide size is not a multiple of a cipher block size.

        Also installs the weights-only checkpoint loaders
        (:func:`~mmseg_keyprotect.engine.checkpoint.install_safe_loaders`) before
        anything is loaded.
        """
        install_safe_loaders()
        Protection.from_config(runner.cfg).check_sizes()

    def before_save_checkpoint(self, runner, checkpoint: Dict[str, Any]) -> None:
        """Store the protection descriptor in ``checkpoint['meta']``."""
        checkpoint.setdefault('meta', {})[META_KEY] = _current(runner)

    def after_load_checkpoint(self, runner, checkpoint: Dict[str, Any]) -> None:
        """Authenticate and compare the checkpoint's protection, then open its sealed entries.

        Raises:
            EncryptedWeightsError: another key, an edited descriptor, an unsealed
                checkpoint refused, or a sealed entry that fails authentication.
            ProtectionMismatchError: if the protections differ and ``strict``.
        """
        weights = Protection.of(_model(runner)).weight_encryption
        key = None if weights is None else weights.key
        stored = (checkpoint.get('meta') or {}).get(META_KEY)
        if weights is not None:
            _authenticate(checkpoint, stored, key, weights.allow_plaintext)
        current = _current(runner)
        if stored is None:
            if current:
                print_log('the loaded checkpoint has no protection descriptor (an unprotected '
                          'or pretrained model, or saved without KeyProtectionHook); cannot '
                          'check that it was trained with this config\'s protection',
                          logger='current', level=logging.WARNING)
            return
        try:
            check_protection(stored, current)
        except ProtectionMismatchError as err:
            if self.strict or key is not None:
                raise
            print_log(f'{err} (KeyProtectionHook(strict=False): continuing)', logger='current',
                      level=logging.WARNING)
        if key is not None:
            open_checkpoint(checkpoint, key, stored)


def _authenticate(checkpoint: Mapping[str, Any], stored: Optional[List[Dict[str, Any]]],
                  key: SecretKey, allow_plaintext: bool) -> None:
    """Check the stored descriptor's key and HMAC, or that an unsealed checkpoint is allowed."""
    mac = (checkpoint.get('meta') or {}).get(META_MAC_KEY)
    sealed = any(isinstance(e, dict) and (TREE_MARKER in e or is_sealed(e))
                 for e in checkpoint.values())
    if mac is None and not sealed:
        if allow_plaintext:
            return
        raise EncryptedWeightsError(
            'the checkpoint is not sealed (plaintext weights, or its headers and descriptor '
            'HMAC were stripped): refusing to load it into a model with encrypt_weights=True; '
            'to start from unencrypted weights on purpose, set '
            'protection.allow_plaintext_weights=True')
    fingerprints = sorted({e.get('key') for e in stored or () if e.get('type') ==
                           'WeightEncryption'})
    if fingerprints and fingerprints != [key.fingerprint]:
        raise EncryptedWeightsError(
            f'the checkpoint is encrypted with the key of fingerprint {", ".join(fingerprints)}, '
            f'but the model was given the key of fingerprint {key.fingerprint}; give the key the '
            'model was trained with')
    if stored is None or mac is None or not hmac.compare_digest(
            str(mac), _descriptor_mac(key, stored)):
        raise EncryptedWeightsError(
            f"the checkpoint's protection descriptor (meta[{META_KEY!r}]) failed "
            'authentication: it was edited or removed')


@HOOKS.register_module()
class CheckpointSealHook(Hook):
    """Store the protection descriptor in checkpoints and, with ``encrypt_weights``, seal them.

    Runs last (priority ``LOWEST``) so it seals what every other hook added.
    """

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        """Let an ``encrypt_weights`` model train: its checkpoints will be sealed."""
        mark_checkpoints_sealed(_model(runner))

    def before_save_checkpoint(self, runner, checkpoint: Dict[str, Any]) -> None:
        """With ``encrypt_weights``: the descriptor's HMAC in ``meta``; seal every tensor."""
        meta = checkpoint.setdefault('meta', {})
        if META_KEY not in meta:  # KeyProtectionHook (VERY_HIGH) usually stored it already
            meta[META_KEY] = _current(runner)
        descriptor = meta[META_KEY]
        model = _model(runner)
        weights = Protection.of(model).weight_encryption
        if weights is not None:
            key = weights.key
            meta[META_MAC_KEY] = _descriptor_mac(key, descriptor)
            seal_checkpoint(checkpoint, model, key, descriptor)


def register_protection_hook(runner) -> None:
    """Register :class:`KeyProtectionHook` and :class:`CheckpointSealHook` unless present."""
    for hook_type in (KeyProtectionHook, CheckpointSealHook):
        if not any(isinstance(hook, hook_type) for hook in runner.hooks):
            runner.register_hook(hook_type())
