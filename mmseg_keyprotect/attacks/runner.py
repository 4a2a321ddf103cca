"""Run one attack with mmengine's runner and report what it recovered."""
from __future__ import annotations

import time
from typing import Any, Dict, List, Optional

import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import Runner
from mmseg.registry import DATASETS, MODELS

from ..protection import Protection
from .adapters import SinkhornPermutation
from .config import AttackSpec, attack_runner_config
from .surface import ATTACK_ATTR, probe

__all__ = ['run_attack', 'true_permutations', 'dataset_size']


def dataset_size(cfg: Config, loader: str = 'train_dataloader') -> int:
    """Number of samples of a dataloader's dataset (builds the dataset, reads no images)."""
    return len(DATASETS.build(cfg[loader].dataset))


def true_permutations(victim: Config) -> Dict[str, torch.Tensor]:
    """The victim's permutation at each point, by point name (needs the victim's key).

    Used only to score permutation recovery; the attack itself never sees them.
    """
    model = MODELS.build(victim.model)
    probe(model)  # points without a declared channel count are sized on the first forward
    return {part.purpose: part.index.cpu() for part in Protection.of(model).permutations}


class _ValidateBeforeTraining(Hook):
    """Validate the loaded weights once, before the first training iteration."""

    def __init__(self) -> None:
        self.metrics: Optional[Dict[str, float]] = None

    def before_train(self, runner: Runner) -> None:
        self.metrics = runner.val_loop.run()


def _sinkhorn_modules(model: torch.nn.Module) -> List[Any]:
    return [(module.point_name, module.module) for module in getattr(model, ATTACK_ATTR, [])
            if isinstance(module.module, SinkhornPermutation)]


def run_attack(victim: Config,
               checkpoint: Optional[str],
               spec: AttackSpec,
               work_dir: str,
               truth: Optional[Dict[str, torch.Tensor]] = None) -> Dict[str, Any]:
    """Train and evaluate one attack.

    Args:
        victim: the protected config (as loaded, with its data roots).
        checkpoint: the stolen checkpoint.
        spec: the attack.
        work_dir: mmengine's work_dir for this run.
        truth: the victim's permutations by point name (:func:`true_permutations`),
            to score ``sinkhorn``'s rounded permutations; optional.

    Returns:
        dict: ``kind``, ``fraction``, ``budget``, ``seed``, ``train_images``,
        ``mIoU``/``mAcc``/``aAcc`` (plain floats), ``seconds``; for ``sinkhorn``
        also ``soft_mIoU`` and ``recovered`` (share of channels whose rounded
        permutation entry is right, per point) when ``truth`` is given; for
        ``weight_matching`` also ``matched_mIoU`` (the matched weights before training).
    """
    cfg, _ = attack_runner_config(victim, checkpoint, spec, work_dir, dataset_size(victim))
    start = time.time()
    runner = Runner.from_cfg(cfg)
    before = _ValidateBeforeTraining()
    if spec.kind == 'weight_matching':
        runner.register_hook(before, priority='LOWEST')
    runner.train()
    result: Dict[str, Any] = dict(
        kind=spec.kind, init=spec.init, fraction=spec.fraction, budget=spec.budget,
        seed=spec.seed,
        train_images=len(cfg.train_dataloader.dataset.indices))
    if before.metrics is not None:  # the matched weights, before any training
        result['matched_mIoU'] = float(before.metrics['mIoU'])
    model = runner.model
    sinkhorns = _sinkhorn_modules(model)
    if sinkhorns:
        soft = runner.val_loop.run()
        result['soft_mIoU'] = float(soft['mIoU'])
        recovered = {}
        for name, module in sinkhorns:
            index = module.harden().cpu()
            if truth and name in truth:
                recovered[name] = float((index == truth[name]).float().mean())
        if recovered:
            result['recovered'] = recovered
    metrics = runner.val_loop.run()
    result.update({k: float(v) for k, v in metrics.items()})
    result['seconds'] = round(time.time() - start, 1)
    return result
