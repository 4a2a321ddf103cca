"""Engine side: the runner for protected configs (RUNNERS), the hooks that check and seal
(HOOKS), the weights-only checkpoint loaders and the CPU-only ``pytorch`` launcher.

Nothing here changes mmengine on import: the loaders are installed by the runner, the
hooks, :mod:`mmseg_keyprotect.apis` or :mod:`mmseg_keyprotect.compat`.
"""
from .checkpoint import (install_safe_loaders, load_from_local_weights_only,
                         safe_loaders_installed, uninstall_safe_loaders)
from .hooks import CheckpointSealHook, KeyProtectionHook, register_protection_hook
from .launcher import init_cpu_process_group
from .runner import KeyProtectedRunner

__all__ = [
    'install_safe_loaders', 'uninstall_safe_loaders', 'safe_loaders_installed',
    'load_from_local_weights_only', 'KeyProtectionHook', 'CheckpointSealHook',
    'register_protection_hook', 'init_cpu_process_group', 'KeyProtectedRunner'
]
