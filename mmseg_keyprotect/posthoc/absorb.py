"""Absorbed feature permutations: protect a trained segmentor with a key, no training.

:func:`absorb_permutations` puts the keyed channel permutations of
:func:`~mmseg_keyprotect.models.points.attach_permutations` at points of a
trained model and changes its weights (:mod:`.channels`) so that the keyed
model, under the correct key, computes exactly what the trained model
computed, while the stored weights differ. Without the key (plain, or a wrong
key) the consumers of each point read their input channels in the wrong
order.

The permutations are the ones a protected config builds
(``KeyProtectedEncoderDecoder`` with ``protection=dict(key=..., points=...)``):
each is derived from the key under its point's name, so the transformed
weights load into the normal protected model.

Exactness is checked, not assumed: after transforming, the keyed model runs
on a random input under the correct key and is compared with the original.

Example:
    >>> result = absorb_permutations(model, 'auto', key)  # doctest: +SKIP
    >>> protected.load_state_dict(result.state_dict)  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import logging
from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from ..keys import KeySpec, SecretKey, resolve_key
from ..models.auto_points import is_preset, resolve_points
from ..models.points import PointLike, PointSpec, attach_permutations, parse_points
from ..protection import Protection
from .channels import Hook, PointRefused, absorb_records, points_reached
from .segmentor import forward_heads, probe_input
from .trace import record_ops

__all__ = ['Absorbed', 'absorb_permutations', 'max_output_difference', 'describe_absorbed',
           'transformed_weights', 'apply_weights', 'check_same_outputs', 'DEFAULT_ATOL']

#: The largest output difference accepted as exact (float32 logits).
DEFAULT_ATOL = 1e-4


@dataclass
class Absorbed:
    """What :func:`absorb_permutations` made.

    Attributes:
        state_dict: every weight of the model, the changed ones transformed (same
            names as the model's own ``state_dict``).
        points: the points protected (presets resolved, refused points left out).
        changed: the names of the tensors that changed.
        refused: one line per point left out (``points='auto'`` only).
        max_difference: the largest |output difference| measured between the
            keyed model under the correct key and the original model.
        keyed_model: the transformed model with its permutations attached.
    """

    state_dict: Dict[str, Tensor]
    points: List[PointSpec]
    changed: List[str]
    refused: List[str]
    max_difference: float
    keyed_model: nn.Module


def max_output_difference(a: Sequence[Tensor], b: Sequence[Tensor]) -> float:
    """The largest |difference| between corresponding tensors (inf if shapes differ)."""
    if len(a) != len(b) or any(x.shape != y.shape for x, y in zip(a, b)):
        return float('inf')
    return max((float((x.float() - y.float()).abs().max()) for x, y in zip(a, b)), default=0.0)


def absorb_permutations(model: nn.Module,
                        points: Union[PointLike, Sequence[PointLike]],
                        key: KeySpec,
                        input_size: Optional[Tuple[int, int]] = None,
                        atol: float = DEFAULT_ATOL) -> Absorbed:
    """Place keyed permutations at ``points`` and transform the weights to absorb them.

    Args:
        model: a trained mmseg segmentor without permutations (left unchanged).
        points: module-path points (``'backbone.layer1:input'``), a preset
            (``'auto'``, ``'backbone-stages'``, ``'classifier-input'``) or a list
            of both, as for ``KeyProtectedEncoderDecoder``.
        key: the secret key or its source.
        input_size: ``(H, W)`` of the random input used to follow the channels
            and to check exactness; default: the data preprocessor's ``size``, else 64x64.
        atol: the largest output difference accepted.

    Returns:
        Absorbed: the transformed ``state_dict``, the points, and the check.

    Raises:
        PointRefused: a point given by path whose permutation cannot be kept
            exact (one line: the point and the reason). Points chosen by a
            preset are left out instead, each with one logged line.
        ValueError: no point remains, or the check finds a difference above ``atol``.
    """
    secret = resolve_key(key, 'absorbed permutations')
    items = [points] if isinstance(points, (str, Mapping, PointSpec)) else list(points)
    explicit = {PointSpec.parse(p).name() for p in items if not is_preset(p)}
    specs = list(parse_points(resolve_points(model, items, input_size)))
    inputs = probe_input(model, input_size, seed=0)
    refused: List[str] = []
    while True:
        if not specs:
            raise ValueError(f'points={points!r}: no point can be absorbed exactly ('
                             f'{"; ".join(refused)})')
        try:
            keyed, changes = _absorb(model, specs, secret, inputs)
            break
        except PointRefused as error:
            if error.point in explicit or error.point not in {s.name() for s in specs}:
                raise
            refused.append(str(error))
            print_log(f'left out {error}', logger='current', level=logging.WARNING)
            specs = [s for s in specs if s.name() != error.point]
    check = probe_input(model, input_size, seed=1)
    difference = _check_exact(model, keyed, check, specs, atol)
    return Absorbed({k: v.detach().clone() for k, v in keyed.state_dict().items()}, specs,
                    sorted(changes), refused, difference, keyed)


def _absorb(model: nn.Module, specs: Sequence[PointSpec], key: SecretKey,
            inputs: Tensor) -> Tuple[nn.Module, Dict[str, Tensor]]:
    """A copy of ``model`` with the permutations attached and the weights transformed."""
    keyed = copy.deepcopy(model).eval()
    perms = attach_permutations(keyed, list(specs), key)
    if any(p.index is None for p in perms):
        with torch.no_grad():
            forward_heads(keyed, inputs)  # sizes the permutations whose channels were not given
    hooks = {id(p.index): (p.purpose, p.index, None) for p in perms if p.index is not None}
    changes = transformed_weights(keyed, hooks, inputs, [s.name() for s in specs])
    apply_weights(keyed, changes)
    return keyed, changes


def transformed_weights(model: nn.Module, hooks: Mapping[int, Hook], inputs: Tensor,
                        points: Sequence[str]) -> Dict[str, Tensor]:
    """Record one pass of ``model`` on ``inputs`` and absorb the points' permutations.

    Args:
        model: the model whose pass runs the permutations (eval mode).
        hooks: ``id(index)`` -> :data:`~.channels.Hook` of every point.
        inputs: the input batch.
        points: the names of the points that must run in the pass.

    Returns:
        dict: name -> new value of every parameter or buffer that changes.

    Raises:
        PointRefused: a point that never runs, or whose permutation cannot be absorbed.
    """
    with torch.no_grad():
        params = {id(t): name for name, t in _named_tensors(model)}
        records, outputs = record_ops(lambda: forward_heads(model, inputs))
    reached = points_reached(records, hooks)
    missing = [name for name in points if name not in reached]
    if missing:
        raise PointRefused(missing[0], 'the forward pass never reaches it')
    return absorb_records(records, outputs, params, hooks)


def apply_weights(model: nn.Module, changes: Mapping[str, Tensor]) -> None:
    """Copy ``changes`` (name -> value) into ``model``'s parameters and buffers."""
    tensors = dict(_named_tensors(model))
    with torch.no_grad():
        for name, value in changes.items():
            tensors[name].copy_(value)


def _named_tensors(model: nn.Module) -> List[Tuple[str, Tensor]]:
    return list(model.named_parameters()) + list(model.named_buffers())


def _check_exact(model: nn.Module, keyed: nn.Module, inputs: Tensor,
                 specs: Sequence[PointSpec], atol: float) -> float:
    with Protection.of(keyed).applied('correct'):
        return check_same_outputs(model, keyed, inputs, [s.name() for s in specs], atol)


def check_same_outputs(reference: nn.Module, transformed: nn.Module, inputs: Tensor,
                       points: Sequence[str], atol: float = DEFAULT_ATOL) -> float:
    """Run both models (eval mode, as they are keyed now) and compare every head's output.

    Returns:
        float: the largest |output difference|.

    Raises:
        ValueError: if it is above ``atol`` (naming the points).
    """
    modes = [(m, m.training) for m in (reference, transformed)]
    try:
        with torch.no_grad():
            expected = forward_heads(reference.eval(), inputs)
            got = forward_heads(transformed.eval(), inputs)
    finally:
        for module, training in modes:
            module.train(training)
    difference = max_output_difference(expected, got)
    if not difference <= atol:
        raise ValueError(f'the transformed model at [{", ".join(points)}] is not exact: max '
                         f'|output difference| {difference:.3g} > {atol:g}; protect fewer points')
    return difference


def describe_absorbed(result: Absorbed) -> Dict[str, Any]:
    """A short, non-secret summary (points, number of tensors changed, the check)."""
    return {'points': [s.name() for s in result.points], 'changed': len(result.changed),
            'refused': list(result.refused), 'max_difference': result.max_difference}
