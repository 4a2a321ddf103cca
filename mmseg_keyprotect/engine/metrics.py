"""A faster, exactly equal ``IoUMetric.intersect_and_union`` for many-condition evaluation.

Evaluating 100+ key conditions runs mmseg's ``IoUMetric.process`` once per
condition and image; its three ``torch.histc`` calls over float copies of the
masks dominate that cost on a CPU. :func:`intersect_and_union` computes the
same four histograms with integer ``torch.bincount`` and returns bit-identical
float32 tensors (``histc`` with ``bins=C`` on ``[0, C-1]`` puts integer ``v``
in bin ``v`` and drops values outside the range; so does this).
"""
from __future__ import annotations

from typing import Any, Iterable, Tuple

import torch
from mmseg.evaluation.metrics import IoUMetric

__all__ = ['intersect_and_union', 'use_fast_iou']


def _histogram(values: torch.Tensor, num_classes: int) -> torch.Tensor:
    values = values[(values >= 0) & (values < num_classes)].long()
    return torch.bincount(values, minlength=num_classes).float().cpu()


def intersect_and_union(pred_label: torch.Tensor, label: torch.Tensor, num_classes: int,
                        ignore_index: int) -> Tuple[torch.Tensor, ...]:
    """Same as ``IoUMetric.intersect_and_union``, with ``bincount`` instead of ``histc``.

    Returns:
        tuple: area_intersect, area_union, area_pred_label, area_label (float32, CPU).
    """
    if num_classes < 2:  # histc(min=0, max=0) falls back to the data range: keep mmseg's
        return IoUMetric.intersect_and_union(pred_label, label, num_classes, ignore_index)
    mask = label != ignore_index
    pred_label = pred_label[mask]
    label = label[mask]
    area_intersect = _histogram(pred_label[pred_label == label], num_classes)
    area_pred_label = _histogram(pred_label, num_classes)
    area_label = _histogram(label, num_classes)
    area_union = area_pred_label + area_label - area_intersect
    return area_intersect, area_union, area_pred_label, area_label


def use_fast_iou(metrics: Iterable[Any]) -> None:
    """Give every plain ``IoUMetric`` among ``metrics`` the fast, identical histograms.

    Only instances of mmseg's ``IoUMetric`` itself are changed (an instance
    attribute, so the class and subclasses that override the method are untouched).
    """
    for metric in metrics:
        if type(metric) is IoUMetric:
            metric.intersect_and_union = intersect_and_union
