"""A runner for protected configs: redacts key sources from what it writes, seals checkpoints.

mmengine's :class:`~mmengine.runner.Runner` writes its config three times
before any hook runs: into the log (``Config:``), into the visualizer's
``vis_data/config.py`` and into the work_dir, and then once more into the
``meta.cfg`` of every checkpoint. A config names its keys by their source;
a file path or an environment variable's name says where a key is, but a
seed (``key=dict(seed=N, published=True)``) *is* the key.

:class:`KeyProtectedRunner` builds every component from the config as
given, and keeps as ``runner.cfg`` (the copy it writes) a copy whose key
sources are redacted
(:func:`~mmseg_keyprotect.keys.redact_key_sources`). It also registers
:class:`~mmseg_keyprotect.engine.hooks.KeyProtectionHook` and
:class:`~mmseg_keyprotect.engine.hooks.CheckpointSealHook`, installs the
weights-only checkpoint loaders
(:func:`~mmseg_keyprotect.checkpoint.install_safe_loaders`) and starts
``--launcher pytorch`` on CPU-only machines
(:func:`~mmseg_keyprotect.engine.launcher.init_cpu_process_group`). Select it with::

    runner_type = 'KeyProtectedRunner'

which mmseg's ``tools/train.py`` and ``tools/test.py`` honour
(``RUNNERS.build(cfg)``). The configs shipped here set it.
"""
from __future__ import annotations

import copy
from typing import Any

from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import RUNNERS

from ..checkpoint import install_safe_loaders, sealing
from ..keys import redact_key_sources
from .hooks import register_protection_hook, seal_runner_checkpoint
from .launcher import init_cpu_process_group

__all__ = ['KeyProtectedRunner']


@RUNNERS.register_module()
class KeyProtectedRunner(Runner):
    """mmengine's ``Runner`` that writes a redacted config and seals checkpoints.

    Args:
        *args: as for :class:`mmengine.runner.Runner`.
        cfg (Config | dict, optional): the full config, as for ``Runner``.
            The runner keeps (and writes) a redacted copy; the components
            passed in the other arguments keep their key sources.
        **kwargs: as for :class:`mmengine.runner.Runner`.
    """

    def __init__(self, *args: Any, cfg: Any = None, **kwargs: Any) -> None:
        if cfg is not None:
            cfg = copy.deepcopy(cfg) if isinstance(cfg, Config) else Config(copy.deepcopy(cfg))
            redact_key_sources(cfg)
        install_safe_loaders()
        super().__init__(*args, cfg=cfg, **kwargs)
        register_protection_hook(self)

    def call_hook(self, fn_name: str, **kwargs: Any) -> None:
        """mmengine's ``call_hook``; after every ``before_save_checkpoint`` hook, the last seal.

        mmengine writes the checkpoint right after these hooks: whatever a hook
        added after :class:`~mmseg_keyprotect.engine.hooks.CheckpointSealHook`
        is sealed here (or refused), and the manifest is made anew. Hooks
        (checkpointing, EMA) take the model's clear ``state_dict`` without the
        clear-weights warning (:func:`~mmseg_keyprotect.checkpoint.sealing`).
        """
        with sealing():
            super().call_hook(fn_name, **kwargs)
            if fn_name == 'before_save_checkpoint':
                seal_runner_checkpoint(self, kwargs['checkpoint'])

    def save_checkpoint(self, *args: Any, **kwargs: Any) -> None:
        """mmengine's ``save_checkpoint``: every tensor it writes is sealed (``encrypt_weights``)."""
        with sealing():
            super().save_checkpoint(*args, **kwargs)

    def setup_env(self, env_cfg: dict) -> None:
        """mmengine's ``setup_env``; a CPU-only ``pytorch`` launch starts its gloo group first."""
        if self.distributed:
            init_cpu_process_group(self.launcher, env_cfg.get('dist_cfg', {}))
        super().setup_env(env_cfg)
