"""A hook that checks a protected run before it starts and ties checkpoints to their protection.

:class:`KeyProtectionHook`

* ``before_run``: :func:`~mmseg_keyprotect.engine.protection.check_block_alignment`
  on the runner's config, so a block size that does not divide a crop, pad or
  slide size fails before weights are initialised, a checkpoint is loaded or an
  iteration runs;
* ``before_save_checkpoint``: stores the non-secret protection descriptor
  (:func:`~mmseg_keyprotect.engine.protection.describe_protection`) as
  ``checkpoint['meta']['key_protection']``;
* ``after_load_checkpoint`` (``load_from``, ``--resume``, ``tools/test.py``):
  compares the stored descriptor with the model and dataloaders being run, and
  raises :class:`~mmseg_keyprotect.engine.protection.ProtectionMismatchError`
  before the weights are loaded.

The key-condition loops (``KeyConditionValLoop``, ``KeyConditionTestLoop``)
register it on their runner, so protected configs using them need nothing
else. A config that uses other loops adds it itself::

    custom_hooks = [dict(type='KeyProtectionHook')]

What "before any file is written" means with mmengine: the runner creates the
work_dir, its log file and (at the end of ``Runner.__init__``) the config dump
before any hook runs. Errors raised while building components (key files,
point paths, channel counts at build time) come before the config dump;
errors raised by this hook come before any checkpoint, metric file or
training iteration.
"""
from __future__ import annotations

import logging
from typing import Any, Dict, List

from mmengine.hooks import Hook
from mmengine.logging import print_log
from mmengine.runner import BaseLoop
from mmseg.registry import HOOKS

from .protection import (ProtectionMismatchError, check_block_alignment, check_protection,
                         describe_protection)

__all__ = ['KeyProtectionHook', 'register_protection_hook', 'META_KEY']

#: Field of ``checkpoint['meta']`` holding the protection descriptor.
META_KEY = 'key_protection'


@HOOKS.register_module()
class KeyProtectionHook(Hook):
    """Check block alignment before a run; store and verify protection in checkpoints.

    Args:
        strict (bool): raise when a loaded checkpoint's protection differs from
            the config's. ``False`` only logs a warning (e.g. to fine-tune a
            model under a new key on purpose). Defaults to True.
    """

    priority = 'VERY_HIGH'

    def __init__(self, strict: bool = True) -> None:
        self.strict = strict

    def before_run(self, runner) -> None:
        """Raise if a crop, pad or slide size is not a multiple of a cipher block size."""
        check_block_alignment(runner.cfg)

    def before_save_checkpoint(self, runner, checkpoint: Dict[str, Any]) -> None:
        """Store the protection descriptor in ``checkpoint['meta']``."""
        checkpoint.setdefault('meta', {})[META_KEY] = self._current(runner)

    def after_load_checkpoint(self, runner, checkpoint: Dict[str, Any]) -> None:
        """Compare the checkpoint's stored protection with the config's.

        Raises:
            ProtectionMismatchError: if they differ and ``strict`` is True.
        """
        stored = (checkpoint.get('meta') or {}).get(META_KEY)
        current = self._current(runner)
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
            if self.strict:
                raise
            print_log(f'{err} (KeyProtectionHook(strict=False): continuing)', logger='current',
                      level=logging.WARNING)

    @staticmethod
    def _current(runner) -> List[Dict[str, Any]]:
        """The descriptor of the runner's model and the dataloaders of its built loops."""
        loops = (runner._train_loop, runner._val_loop, runner._test_loop)
        loaders = [loop.dataloader for loop in loops if isinstance(loop, BaseLoop)]
        return describe_protection(runner.model, *loaders)


def register_protection_hook(runner) -> None:
    """Register a :class:`KeyProtectionHook` on ``runner`` unless it already has one."""
    if not any(isinstance(hook, KeyProtectionHook) for hook in runner.hooks):
        runner.register_hook(KeyProtectionHook())
