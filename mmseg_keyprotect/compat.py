"""Opt-in fixes for mmengine 0.10.7 on new torch: importing this module installs them.

Importing :mod:`mmseg_keyprotect` only registers components. Importing this
module also

* replaces the loader of every scheme of mmengine's ``CheckpointLoader`` with
  the weights-only loaders of :mod:`mmseg_keyprotect.checkpoint.safe_load`
  (mmengine cannot load its own checkpoints on torch >= 2.6 otherwise, and must
  not fall back to unpickling arbitrary files);
* makes mmengine's ``--launcher pytorch`` work on CPU-only machines
  (:func:`~mmseg_keyprotect.engine.launcher.install_cpu_launcher`; with a GPU
  mmengine's launcher runs unchanged).

The shipped configs list it, so mmseg's own ``tools/test.py`` (which ignores
``runner_type``), ``init_model`` and ``MMSegInferencer`` get both::

    custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                          allow_failed_imports=False)

The plugin's runner, hooks, loops and :mod:`mmseg_keyprotect.apis` install the
loaders themselves, and :class:`~mmseg_keyprotect.engine.runner.KeyProtectedRunner`
starts CPU process groups without patching anything. :func:`uninstall` undoes both.
"""
from .checkpoint import install_safe_loaders, safe_loaders_installed, uninstall_safe_loaders
from .engine.launcher import (cpu_launcher_installed, install_cpu_launcher,
                              uninstall_cpu_launcher)

__all__ = ['install', 'uninstall', 'installed']


def install() -> None:
    """Install the weights-only checkpoint loaders and the CPU-only launcher (idempotent)."""
    install_safe_loaders()
    install_cpu_launcher()


def uninstall() -> None:
    """Restore mmengine's checkpoint loaders and launcher."""
    uninstall_safe_loaders()
    uninstall_cpu_launcher()


def installed() -> bool:
    """Whether both fixes are in effect."""
    return safe_loaders_installed() and cpu_launcher_installed()


install()
