"""The attacker's model: a stolen segmentor, some parts frozen, adapters at the points.

:func:`build_attacked_segmentor` is registered in mmseg's ``MODELS`` as
``AttackedSegmentor``. It builds the (unprotected) segmentor from its config,
places attack modules (:mod:`.adapters`) at the protected points, and freezes
every parameter outside ``trainable`` and the adapters. It returns the
segmentor itself, so a stolen checkpoint loads into it with mmengine's
``load_from`` (the adapters' parameters are the only extra keys) and mmengine's
runner, optimizer and loops train and evaluate it unchanged::

    model = dict(type='AttackedSegmentor', segmentor=STOLEN_MODEL_CFG,
                 adapters=dict(kind='adapter', points=['decode_head.conv_seg:input']),
                 trainable=[])

Frozen normalisation layers stay in inference mode during training (their
running statistics are the stolen model's and are not updated), as an attacker
who trains only a few parameters on a few images would do.
"""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

import torch
from mmseg.registry import MODELS
from torch import nn

from ..models.auto_points import resolve_points
from ..models.points import PointSpec, find_module, parse_points
from .adapters import build_point_adapter

__all__ = ['build_attacked_segmentor', 'ATTACK_ATTR', 'frozen_norm_layers', 'probe']

#: Attribute of the segmentor that holds the attack modules.
ATTACK_ATTR = 'keyprotect_attack'


@MODELS.register_module(name='AttackedSegmentor')
def build_attacked_segmentor(segmentor: Mapping[str, Any],
                             adapters: Optional[Mapping[str, Any]] = None,
                             trainable: Any = 'all',
                             probe_size: Optional[Tuple[int, int]] = None,
                             data_preprocessor: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Build a segmentor for an attack on its protection.

    Args:
        segmentor: the segmentor's config (without protection: the attacker
            has no key).
        adapters: ``dict(kind='adapter'|'sinkhorn', points=[...], block_size=None,
            recorded=False, **sinkhorn_options)``, or None for no adapters
            (``recorded``: the points are names from a checkpoint's descriptor). ``block_size``
            makes the modules act on MxM image blocks (for block ciphers; the
            point is then usually ``'backbone:input'``).
        trainable: ``'all'`` (every parameter), or a list of module paths whose
            parameters are trained (``[]``: only the adapters).
        probe_size: (H, W) of a zero image run once to size the adapters;
            defaults to the data preprocessor's ``size`` or (64, 64).
        data_preprocessor: the runner's top-level ``data_preprocessor`` (mmengine
            passes it to every model); used when ``segmentor`` has none.

    Returns:
        nn.Module: the segmentor; its attack modules are in ``.keyprotect_attack``.

    Raises:
        ValueError: on an unknown module path in ``trainable`` or a bad point.
    """
    segmentor = dict(segmentor)
    if data_preprocessor is not None:
        segmentor.setdefault('data_preprocessor', data_preprocessor)
    model = MODELS.build(segmentor)
    modules = dict(model.named_modules())
    attack = nn.ModuleList()
    if adapters:
        options = dict(adapters)
        kind = options.pop('kind')
        specs = _resolved(model, options.pop('points'), options.pop('recorded', False))
        for spec in specs:
            module = build_point_adapter(spec, kind, **options)
            module.register_on(find_module(modules, spec, ''))
            attack.append(module)
    if trainable != 'all':
        _freeze_except(model, modules, trainable)
    setattr(model, ATTACK_ATTR, attack)
    if adapters:
        probe(model, probe_size)
    return model


def _resolved(model: nn.Module, points: Any, recorded: bool) -> List[PointSpec]:
    """``points`` with presets resolved on ``model``; points named by a checkpoint's
    descriptor (``recorded``, e.g. ``'backbone.layers.0.2:output'``) take the channel axis
    ``'auto'`` finds for them (token features are ``channel_dim=-1``)."""
    specs = list(parse_points(resolve_points(model, points)))
    if not recorded:
        return specs
    try:
        found = {spec.name(): spec for spec in parse_points(resolve_points(model, 'auto'))}
    except ValueError:  # a model auto cannot trace: the points stay as given
        return specs
    return [found.get(spec.name(), spec) for spec in specs]


def _freeze_except(model: nn.Module, modules: Mapping[str, nn.Module],
                   trainable: Sequence[str]) -> None:
    if isinstance(trainable, str):
        raise ValueError(f"trainable must be 'all' or a list of module paths, got {trainable!r}")
    unknown = [path for path in trainable if path not in modules]
    if unknown:
        raise ValueError(f'trainable: no module at {unknown} in {type(model).__name__}')
    for param in model.parameters():
        param.requires_grad_(False)
    for path in trainable:
        for param in modules[path].parameters():
            param.requires_grad_(True)
    frozen = [m for m in model.modules()
              if _is_norm_with_stats(m) and not any(p.requires_grad for p in m.parameters())]
    if frozen:
        model.register_forward_pre_hook(_FrozenNormsInEval(frozen))


def _is_norm_with_stats(module: nn.Module) -> bool:
    """Batch / instance / sync-batch norm layers: they keep running statistics."""
    return isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm,
                               nn.InstanceNorm1d, nn.InstanceNorm2d, nn.InstanceNorm3d))


class _FrozenNormsInEval:
    """Forward pre-hook: keep frozen normalisation layers in inference mode."""

    def __init__(self, norms: List[nn.Module]) -> None:
        self.norms = norms

    def __call__(self, module: nn.Module, args: Any) -> None:
        if module.training:
            for norm in self.norms:
                norm.eval()


def frozen_norm_layers(model: nn.Module) -> List[nn.Module]:
    """The normalisation layers an :func:`build_attacked_segmentor` model keeps in eval mode."""
    return [norm for hook in model._forward_pre_hooks.values()
            if isinstance(hook, _FrozenNormsInEval) for norm in hook.norms]


@torch.no_grad()
def probe(model: nn.Module, size: Optional[Tuple[int, int]] = None) -> None:
    """One forward of a zero image in eval mode, so lazily sized adapters get their parameters."""
    if size is None:
        size = getattr(getattr(model, 'data_preprocessor', None), 'size', None) or (64, 64)
    was_training = model.training
    model.eval()
    try:
        model(torch.zeros(1, 3, *size), mode='tensor')
    finally:
        model.train(was_training)

