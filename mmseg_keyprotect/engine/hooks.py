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
  checks the file against its manifest (:func:`~mmseg_keyprotect.checkpoint.verify_file`;
  a file of the previous version only warns) and, on ``--resume``, against the
  work_dir's rollback record; compares the descriptor with the model and
  dataloaders being run
  (:class:`~mmseg_keyprotect.protection.ProtectionMismatchError`); then
  opens the sealed optimizer state and every other sealed entry, all before
  mmengine copies a weight (the model's own ``state_dict`` is opened by the
  model's load hook, which checks it again).

:class:`CheckpointSealHook` (priority ``LOWEST``, so it sees what every other
hook added, e.g. ``EMAHook``'s ``ema_state_dict``)

* ``before_save_checkpoint``: with ``encrypt_weights``, stores the HMAC of
  the protection descriptor, seals every tensor and numpy array of the
  checkpoint (:func:`~mmseg_keyprotect.checkpoint.seal_file`): the model's
  ``state_dict`` (and its copy inside EMA/averaged models) as model groups,
  ``meta``, the optimizer state and any other entry as tree groups; writes
  the manifest and raises the run's iteration in the rollback record;
* ``before_train``: tells an ``encrypt_weights`` model that its checkpoints
  will be sealed (such a model refuses to train otherwise), moves behind every
  other hook and gives the run its identity.

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

import logging
import secrets
from typing import Any, Dict, List, Optional

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.model import is_model_wrapper
from mmengine.runner import BaseLoop
from mmseg.registry import HOOKS
from torch import nn

from ..checkpoint import (META_KEY, EncryptedWeightsError, authenticate, install_safe_loaders,
                          open_checkpoint, seal_file, verify_file)
from ..checkpoint.rollback import RECORD_NAME, read_record, record_iteration
from ..models.weight_encryption import mark_checkpoints_sealed
from ..protection import Protection, ProtectionMismatchError, check_protection

__all__ = ['KeyProtectionHook', 'CheckpointSealHook', 'register_protection_hook',
           'seal_runner_checkpoint', 'run_identity']

#: Message hub info holding the run's identity (restored by ``--resume``).
_RUN_INFO = 'keyprotect_run'


def _model(runner) -> nn.Module:
    return runner.model.module if is_model_wrapper(runner.model) else runner.model


def _current(runner) -> List[Dict[str, Any]]:
    """The descriptor of the runner's model and the dataloaders of its built loops."""
    return Protection.from_runner(runner).describe()


def _starts_training(runner) -> bool:
    """Whether the checkpoint initialises a training (``load_from``), not a resumed one or a
    test: only then may an unprotected checkpoint load into a protected model."""
    return (isinstance(getattr(runner, '_train_loop', None), BaseLoop)
            and not getattr(runner, '_resume', False))


def _weight_encryption(runner) -> Optional[Any]:
    """The weight-encryption part of the runner's model, or None."""
    return Protection.of(_model(runner)).weight_encryption


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
        (:func:`~mmseg_keyprotect.checkpoint.install_safe_loaders`) before
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
            ProtectionMismatchError: if the protections differ and ``strict`` (except
                for a training that starts from an unprotected checkpoint: fine-tuning
                plain weights under the key, which only logs).
        """
        encryption = _weight_encryption(runner)
        key = None if encryption is None else encryption.key
        stored = (checkpoint.get('meta') or {}).get(META_KEY)
        if encryption is not None and authenticate(checkpoint, key, encryption.allow_plaintext):
            manifest = verify_file(checkpoint, key)
            if manifest is None:
                print_log(_LEGACY_WARNING, logger='current', level=logging.WARNING)
            elif getattr(runner, '_resume', False):
                _check_rollback(runner, key, manifest)
        current = _current(runner)
        if stored is None:
            if current:
                print_log('the loaded checkpoint has no protection descriptor (an unprotected '
                          'or pretrained model, or saved without KeyProtectionHook); cannot '
                          'check that it was trained with this config\'s protection',
                          logger='current', level=logging.WARNING)
            return
        if not stored and current and _starts_training(runner):
            print_log('training starts from an unprotected checkpoint (load_from): the model '
                      'is fine-tuned under this config\'s protection from plain weights, and '
                      'may keep working without the key (docs/security.md, section 8); to '
                      'protect a trained plain model, use tools/protect.py instead',
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


_LEGACY_WARNING = (
    'the loaded checkpoint was sealed by a version of mmseg-keyprotect without a file manifest: '
    'each group is authenticated, but not the file as a whole (a group of another checkpoint, '
    'edited meta or schedulers, an older file would not be noticed); upgrade it with '
    '`python tools/upgrade_checkpoint.py FILE --key KEY_FILE`')


def _check_rollback(runner, key, manifest: Dict[str, Any]) -> None:
    """On ``--resume``: refuse a checkpoint older than the newest of its run in the work_dir.

    An older file named on purpose (``load_from`` with ``resume=True``) only warns.
    """
    runs = read_record(runner.work_dir, key)
    newest, iteration = runs.get(manifest['run']), manifest['iter']
    if not runs:
        print_log(f'no rollback record ({RECORD_NAME}) in the work_dir: cannot tell whether the '
                  'resumed checkpoint is the newest of its run', logger='current',
                  level=logging.WARNING)
        return
    if newest is None or iteration is None or iteration >= newest:
        return
    message = (f'the checkpoint is iteration {iteration} of its run, but this work_dir has '
               f'saved iteration {newest} of that run')
    if getattr(runner, '_load_from', None) is not None:
        print_log(f'{message}: resuming from the older file named by load_from, as asked',
                  logger='current', level=logging.WARNING)
        return
    raise EncryptedWeightsError(
        f'{message}: refusing to resume from an older checkpoint (rolled back?); to resume from '
        'it on purpose, name it: load_from=FILE with resume=True')


def run_identity(runner) -> str:
    """The identity of the runner's run: kept in its message hub, so a resume continues it."""
    run = runner.message_hub.get_info(_RUN_INFO)
    if run is None:
        run = secrets.token_hex(8)
        runner.message_hub.update_info(_RUN_INFO, run)
    return run


def seal_runner_checkpoint(runner, checkpoint: Dict[str, Any]) -> None:
    """Seal every tensor of ``checkpoint`` not sealed yet and write its manifest (``encrypt_weights``).

    Also raises the run's iteration in the work_dir's rollback record. Called by
    :class:`CheckpointSealHook` and, after every hook, by
    :class:`~mmseg_keyprotect.engine.runner.KeyProtectedRunner`; does nothing
    for a model that does not encrypt its weights.
    """
    meta = checkpoint.setdefault('meta', {})
    if META_KEY not in meta:  # KeyProtectionHook (VERY_HIGH) usually stored it already
        meta[META_KEY] = _current(runner)
    encryption = _weight_encryption(runner)
    if encryption is None:
        return
    run = run_identity(runner)
    seal_file(checkpoint, _model(runner), encryption.key, run)
    if isinstance(meta.get('iter'), int):
        record_iteration(runner.work_dir, encryption.key, run, meta['iter'])


@HOOKS.register_module()
class CheckpointSealHook(Hook):
    """Store the protection descriptor in checkpoints and, with ``encrypt_weights``, seal them.

    Runs last (priority ``LOWEST``; when training starts it also moves behind
    every hook of the same priority) so it seals what every other hook added.
    :class:`~mmseg_keyprotect.engine.runner.KeyProtectedRunner` walks the
    checkpoint once more after every hook, just before it is written.
    """

    priority = 'LOWEST'

    def before_train(self, runner) -> None:
        """Let an ``encrypt_weights`` model train (its checkpoints will be sealed); start the run.

        Moves this hook behind every other hook, and gives the run its identity
        (:func:`run_identity`) before its first checkpoint.
        """
        mark_checkpoints_sealed(_model(runner))
        hooks = runner.hooks
        if self in hooks:
            hooks.remove(self)
            hooks.append(self)
        run_identity(runner)

    def before_save_checkpoint(self, runner, checkpoint: Dict[str, Any]) -> None:
        """With ``encrypt_weights``: the descriptor's HMAC in ``meta``; seal every tensor."""
        seal_runner_checkpoint(runner, checkpoint)


def register_protection_hook(runner) -> None:
    """Register :class:`KeyProtectionHook` and :class:`CheckpointSealHook` unless present."""
    for hook_type in (KeyProtectionHook, CheckpointSealHook):
        if not any(isinstance(hook, hook_type) for hook in runner.hooks):
            runner.register_hook(hook_type())
