"""Engine side: the runner for protected configs (RUNNERS), the hooks that check and seal
(HOOKS) and the CPU-only ``pytorch`` launcher (the checkpoint format and its loaders are
:mod:`mmseg_keyprotect.checkpoint`).

Nothing here changes mmengine on import.
"""
from .hooks import CheckpointSealHook, KeyProtectionHook, register_protection_hook
from .launcher import init_cpu_process_group
from .runner import KeyProtectedRunner

__all__ = [
    'KeyProtectionHook', 'CheckpointSealHook',
    'register_protection_hook', 'init_cpu_process_group', 'KeyProtectedRunner'
]
