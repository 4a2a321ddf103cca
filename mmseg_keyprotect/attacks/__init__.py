"""Attacks on a protected model, to measure what the protection withstands.

See ``tools/attack.py`` and ``docs/security.md``.
"""
from .adapters import BlockAdapter, ChannelAdapter, SinkhornPermutation, build_point_adapter
from .config import ATTACK_KINDS, INITS, AttackSpec, RemovedProtection, attack_runner_config
from .runner import run_attack, true_permutations
from .stolen_files import correlation_audit, momentum_init
from .surface import ATTACK_ATTR, build_attacked_segmentor

__all__ = [
    'BlockAdapter', 'ChannelAdapter', 'SinkhornPermutation', 'build_point_adapter',
    'ATTACK_KINDS', 'INITS', 'AttackSpec', 'RemovedProtection', 'attack_runner_config',
    'run_attack', 'true_permutations', 'ATTACK_ATTR', 'build_attacked_segmentor',
    'correlation_audit', 'momentum_init'
]
