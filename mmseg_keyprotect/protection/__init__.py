"""The protection of a model: one object that knows every keyed part.

* :mod:`.core`: :class:`Protection` (the keyed parts by role, describe, switch
  conditions, prepare a batch, draw incorrect keys, attacker's view, size checks);
* :mod:`.conditions`: :class:`KeyCondition` (correct / plain / incorrect) and
  incorrect keys drawn distinct;
* :mod:`.keyed_types`: the registry of keyed config types (:func:`keyed_type`) and
  their roles;
* :mod:`.parts`: finding keyed parts of built models, dataloaders and pipelines;
* :mod:`.descriptor`: the non-secret descriptor and key-fingerprint checks;
* :mod:`.sizes`: block sizes against the image sizes of a config.
"""
from .conditions import KeyCondition, condition_list, draw_incorrect_keys, make_conditions
from .core import ConditionLike, Protection
from .descriptor import (Descriptor, KeyMismatchError, ProtectionMismatchError,
                         check_key_fingerprints, check_protection, format_protection)
from .keyed_types import (DATALOADERS, KEYED_TYPES, KeyedType, PipelineStep, PreprocessorCipher,
                          ProtectedBuilder, ProtectedSegmentor, RemovedProtection, Unsupported,
                          config_pipelines, keyed_role, keyed_type, pipelines_of)
from .parts import find_keyed_parts, walk_containers
from .sizes import check_sizes

__all__ = [
    'Protection', 'ConditionLike', 'KeyCondition', 'condition_list', 'draw_incorrect_keys',
    'make_conditions', 'Descriptor', 'KeyMismatchError', 'ProtectionMismatchError',
    'check_key_fingerprints', 'check_protection', 'format_protection', 'DATALOADERS',
    'KEYED_TYPES', 'KeyedType', 'PipelineStep', 'PreprocessorCipher', 'ProtectedBuilder',
    'ProtectedSegmentor', 'RemovedProtection', 'Unsupported', 'config_pipelines', 'keyed_role',
    'keyed_type', 'pipelines_of', 'find_keyed_parts', 'walk_containers', 'check_sizes'
]
