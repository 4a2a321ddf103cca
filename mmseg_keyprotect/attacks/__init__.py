"""Attacks on a protected model, to measure what the protection withstands.

See ``tools/attack.py`` and ``docs/security.md``.
"""
from .adapters import BlockAdapter, ChannelAdapter, SinkhornPermutation, build_point_adapter
from .config import ATTACK_KINDS, INITS, AttackSpec, RemovedProtection, attack_runner_config
from .key_search import few_images_loader, load_stolen_model, search_seed_keys
from .report import attack_report, plot, read_references, read_results, write_attack_report
from .runner import run_attack, true_permutations
from .stolen_files import correlation_audit, momentum_init, owner_reference
from .suite import attack_specs, run_suite
from .surface import ATTACK_ATTR, build_attacked_segmentor

__all__ = [
    'BlockAdapter', 'ChannelAdapter', 'SinkhornPermutation', 'build_point_adapter',
    'ATTACK_KINDS', 'INITS', 'AttackSpec', 'RemovedProtection', 'attack_runner_config',
    'run_attack', 'true_permutations', 'ATTACK_ATTR', 'build_attacked_segmentor',
    'correlation_audit', 'momentum_init', 'owner_reference', 'few_images_loader',
    'load_stolen_model', 'search_seed_keys', 'attack_report', 'plot', 'read_references',
    'read_results', 'write_attack_report', 'attack_specs', 'run_suite'
]
