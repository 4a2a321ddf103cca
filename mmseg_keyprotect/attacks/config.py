"""Configs for attacks: the victim as the attacker sees it, and one attack's runner config.

The threat model is paper 2's, made adaptive: the attacker has the stolen
checkpoint and the victim's config (so the method, the block size and the
protected points are known), but not the key, and some labelled images.

* :meth:`~mmseg_keyprotect.protection.Protection.attacker_view` removes the
  protection from a victim config: protected segmentor types become mmseg's,
  block ciphers leave the pipelines and the data preprocessor; it returns what
  was removed (points, block sizes).
* :func:`attack_runner_config` turns the victim config, a stolen checkpoint and
  an attack spec into a plain mmengine runner config: an
  ``AttackedSegmentor`` (frozen parts, adapters) loaded from the checkpoint,
  trained with mmengine's ``IterBasedTrainLoop`` on a subset of the training
  set, evaluated with mmseg's ``IoUMetric`` on the validation set.
"""
from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import torch
from mmengine.config import Config, ConfigDict

from ..protection import Protection, RemovedProtection
from .stolen_files import momentum_init
from .weight_matching import matched_init

__all__ = ['AttackSpec', 'RemovedProtection', 'attack_runner_config', 'ATTACK_KINDS', 'INITS',
           'FIXED_INIT']

#: Attacks on a stolen model, plus the reference of training from scratch.
#: ``weight_matching`` needs the public checkpoint the victim was fine-tuned from.
ATTACK_KINDS = ('scratch', 'finetune', 'head_only', 'adapter', 'sinkhorn', 'weight_matching')
#: Attacks whose weights start from the stolen ones as given (no ``momentum`` init).
FIXED_INIT = ('scratch', 'weight_matching')
#: Where an attack's weights start (ignored by ``scratch``).
INITS = ('checkpoint', 'momentum')


@dataclass
class AttackSpec:
    """One attack run.

    Args:
        kind: one of :data:`ATTACK_KINDS`.
        fraction: the share of the training set the attacker holds (0 < f <= 1).
        budget: training iterations.
        optim_wrapper: mmengine optim wrapper config.
        param_scheduler: mmengine parameter scheduler config(s), or None.
        head_modules: module paths trained by ``head_only``.
        sinkhorn: options of :class:`~.adapters.SinkhornPermutation`.
        seed: seed of the subset and of training.
        init: where the attacked weights start: ``'checkpoint'`` (the stolen
            weights) or ``'momentum'`` (the optimizer state of a stolen
            ``iter_*.pth``, :func:`~.stolen_files.momentum_init`).
        reference: ``weight_matching``: the public checkpoint the victim was
            fine-tuned from (:func:`~.weight_matching.matched_init`); the
            matched weights are then fine-tuned with the budget.
    """

    kind: str
    fraction: float
    budget: int
    optim_wrapper: Dict[str, Any]
    param_scheduler: Any = None
    head_modules: List[str] = field(default_factory=list)
    sinkhorn: Dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    init: str = 'checkpoint'
    reference: Optional[str] = None

    def __post_init__(self) -> None:
        if self.init not in INITS:
            raise ValueError(f'unknown init {self.init!r}; choose one of {INITS}')
        if self.kind not in ATTACK_KINDS:
            raise ValueError(f'unknown attack {self.kind!r}; choose one of {ATTACK_KINDS}')
        if not 0 < self.fraction <= 1:
            raise ValueError(f'fraction must be in (0, 1], got {self.fraction!r}')
        if self.budget < 1:
            raise ValueError(f'budget must be >= 1 iteration, got {self.budget!r}')
        if self.kind == 'weight_matching' and not self.reference:
            raise ValueError("weight_matching needs the public checkpoint the victim was "
                             "fine-tuned from: victim=dict(..., reference='public.pth') in the "
                             'attack config')
        if self.kind in FIXED_INIT and self.init != 'checkpoint':
            raise ValueError(f"{self.kind} starts from its own weights: init must be "
                             f"'checkpoint', got {self.init!r}")
        if self.kind == 'head_only' and not self.head_modules:
            raise ValueError('head_only needs head_modules: the module paths right after '
                             "the protected points, e.g. ['decode_head.conv_seg']")

    @property
    def slug(self) -> str:
        init = '' if self.init == 'checkpoint' or self.kind == 'scratch' else f'_{self.init}'
        return f'{self.kind}{init}_f{self.fraction:g}_it{self.budget}_s{self.seed}'


def subset_indices(size: int, fraction: float, seed: int) -> List[int]:
    """A fixed random subset of ``round(fraction * size)`` (at least 1) dataset indices."""
    count = max(1, int(round(fraction * size)))
    rng = np.random.default_rng(seed)
    return sorted(int(i) for i in rng.choice(size, count, replace=False))


def stolen_points(points: List[Any], checkpoint: Optional[str]) -> List[Any]:
    """The victim's points, presets (``'auto'`` ...) replaced by what they resolved to.

    A protected checkpoint records the points it was trained with in its (non-secret)
    protection descriptor (``meta['key_protection']``); where the config names a preset,
    those are the points. Without a descriptor the preset is kept and resolved on the
    attacker's model (:func:`~mmseg_keyprotect.attacks.surface.build_attacked_segmentor`).
    """
    from ..apis import checkpoint_protection
    from ..models.auto_points import is_preset
    if not any(is_preset(p) for p in points) or not checkpoint or not Path(checkpoint).is_file():
        return list(points)
    recorded = [entry['point'] for entry in checkpoint_protection(checkpoint) or ()
                if 'point' in entry]
    return list(dict.fromkeys(recorded)) or list(points)


def _write_init(work_dir: str, name: str, state_dict: Dict[str, torch.Tensor]) -> str:
    """Save the attack's initial weights under ``work_dir`` for mmengine's ``load_from``."""
    init_file = Path(work_dir) / name
    init_file.parent.mkdir(parents=True, exist_ok=True)
    torch.save({'state_dict': state_dict}, init_file)
    return str(init_file)


def attack_runner_config(victim: Config, checkpoint: Optional[str], spec: AttackSpec,
                         work_dir: str, train_size: int) -> 'tuple[Config, RemovedProtection]':
    """The mmengine runner config of one attack.

    Args:
        victim: the protected config.
        checkpoint: the stolen checkpoint (ignored by ``scratch``).
        spec: the attack.
        work_dir: where mmengine writes its logs.
        train_size: the number of training samples (the subset is drawn from it).

    Returns:
        (config, removed): the runner config and the protection that was removed.
    """
    cfg, removed = Protection.from_config(victim).attacker_view()
    adapters = None
    trainable: Any = 'all'
    if spec.kind == 'head_only':
        trainable = list(spec.head_modules)
    elif spec.kind in ('adapter', 'sinkhorn'):
        block = removed.block_size
        points = ['backbone:input'] if block else stolen_points(removed.points, checkpoint)
        if not points:
            raise ValueError('the victim config has no protection to attack')
        adapters = dict(kind=spec.kind, points=points, block_size=block,
                        **(spec.sinkhorn if spec.kind == 'sinkhorn' else {}))
        if not block and points != list(removed.points):
            adapters['recorded'] = True  # names from the checkpoint's descriptor
        trainable = []
    cfg.model = ConfigDict(type='AttackedSegmentor', segmentor=cfg.model, adapters=adapters,
                           trainable=trainable)
    cfg.load_from = None if spec.kind == 'scratch' else checkpoint
    if spec.kind == 'weight_matching':
        cfg.load_from = _write_init(work_dir, 'matched_init.pth',
                                    matched_init(checkpoint, spec.reference))
    elif spec.kind != 'scratch' and spec.init == 'momentum':
        cfg.load_from = _write_init(work_dir, 'momentum_init.pth',
                                    momentum_init(cfg.model.segmentor, checkpoint))
    cfg.resume = False
    cfg.work_dir = work_dir
    train = cfg.train_dataloader
    train.dataset.indices = subset_indices(train_size, spec.fraction, spec.seed)
    for loader in ('train_dataloader', 'val_dataloader'):
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.train_cfg = ConfigDict(type='IterBasedTrainLoop', max_iters=spec.budget,
                               val_interval=spec.budget + 1)
    cfg.val_cfg = ConfigDict(type='ValLoop')
    cfg.optim_wrapper = ConfigDict(spec.optim_wrapper)
    cfg.param_scheduler = spec.param_scheduler
    cfg.default_hooks = ConfigDict(
        timer=dict(type='IterTimerHook'),
        logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
        param_scheduler=dict(type='ParamSchedulerHook'),
        checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=-1, save_last=False),
        sampler_seed=dict(type='DistSamplerSeedHook'))
    for unused in ('test_dataloader', 'test_cfg', 'test_evaluator'):
        cfg.pop(unused, None)
    cfg.randomness = dict(seed=spec.seed)
    cfg.log_level = 'WARNING'
    # mmengine keeps one visualizer and message hub per name: one name per run.
    cfg.experiment_name = f'attack_{spec.slug}_{uuid.uuid4().hex[:8]}'
    cfg.visualizer = dict(type='SegLocalVisualizer', vis_backends=[dict(type='LocalVisBackend')],
                          name=cfg.experiment_name)
    return cfg, removed
