"""Engine side: key conditions, their test/val loops (LOOPS), the protection hook (HOOKS),
the runner for protected configs (RUNNERS), the safe checkpoint loaders and CPU-only
distributed launch."""
from . import cpu_dist  # noqa: F401  (patches mmengine's PyTorch launcher for CPU-only torch)
from .checkpoint import load_from_local_weights_only
from .conditions import KeyCondition, find_keyed_components, key_condition, make_conditions
from .hooks import CheckpointSealHook, KeyProtectionHook, register_protection_hook
from .loops import (ConditionEvaluation, KeyConditionTestLoop, KeyConditionValLoop,
                    restart_workers)
from .prefix_cache import KeyIndependentPrefix
from .runner import KeyProtectedRunner
from .protection import (KeyMismatchError, ProtectionMismatchError, check_block_alignment,
                         check_key_fingerprints, check_protection, describe_protection)

__all__ = [
    'load_from_local_weights_only', 'KeyCondition', 'make_conditions', 'find_keyed_components',
    'key_condition', 'ConditionEvaluation', 'KeyConditionTestLoop', 'KeyConditionValLoop',
    'restart_workers', 'KeyIndependentPrefix', 'KeyProtectionHook', 'CheckpointSealHook',
    'KeyProtectedRunner', 'register_protection_hook',
    'ProtectionMismatchError', 'KeyMismatchError', 'check_block_alignment', 'check_protection',
    'check_key_fingerprints', 'describe_protection'
]
