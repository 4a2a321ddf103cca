"""Segmentation metrics for key-condition evaluation.

* :class:`PerImageIoUMetric` (registered in mmseg's ``METRICS``): paper 2's
  mean IoU, computed per image and averaged over images. mmseg's ``IoUMetric``
  pools intersections and unions over the whole dataset first; the two differ
  most where protection matters (near-zero plain/incorrect accuracy).
* :func:`intersect_and_union`, a faster, exactly equal
  ``IoUMetric.intersect_and_union`` for many-condition evaluation.

Evaluating 100+ key conditions runs mmseg's ``IoUMetric.process`` once per
condition and image; its three ``torch.histc`` calls over float copies of the
masks dominate that cost on a CPU. :func:`intersect_and_union` computes the
same four histograms with integer ``torch.bincount`` and returns bit-identical
float32 tensors (``histc`` with ``bins=C`` on ``[0, C-1]`` puts integer ``v``
in bin ``v`` and drops values outside the range; so does this).
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

import torch
from mmengine.evaluator import BaseMetric
from mmengine.logging import print_log
from mmseg.evaluation.metrics import IoUMetric
from mmseg.registry import METRICS

__all__ = ['PerImageIoUMetric', 'image_miou', 'add_per_image_miou', 'intersect_and_union',
           'use_fast_iou']


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


def image_miou(pred_label: torch.Tensor, label: torch.Tensor, num_classes: int,
               ignore_index: int = 255) -> float:
    """Mean IoU of one image: the IoU of every class present in the prediction or the
    ground truth (pixels labelled ``ignore_index`` left out), averaged.

    Returns:
        float: a fraction in ``[0, 1]``; NaN when no pixel is scored (every
        label ignored), so the image has no IoU.
    """
    area_intersect, area_union, _, _ = intersect_and_union(pred_label, label, num_classes,
                                                           ignore_index)
    present = area_union > 0
    if not bool(present.any()):
        return math.nan
    return float((area_intersect[present].double() / area_union[present].double()).mean())


@METRICS.register_module()
class PerImageIoUMetric(BaseMetric):
    """Paper 2's mean IoU: per image, then averaged over the images.

    "The mean IoU value of an image is calculated by averaging the IoU of each
    class [...] The performance of the trained models was calculated by averaging
    the mean IoU values of predictions" (paper 2, Sections II-B and IV-A). A class
    counts for an image when it is in the prediction or in the ground truth; a
    class in neither is left out (not counted as IoU 1 or 0). Images with every
    pixel ignored have no IoU and are left out of the average (their count is
    logged). Scored like mmseg's ``IoUMetric``: ``pred_sem_seg`` against
    ``gt_sem_seg`` of each data sample, in percent.

    Use it beside mmseg's pooled ``IoUMetric``::

        test_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']),
                          dict(type='PerImageIoUMetric')]

    Args:
        ignore_index (int): label left out of the scores. Defaults to 255.
        collect_device (str): as for mmengine metrics. Defaults to 'cpu'.
        prefix (str, optional): as for mmengine metrics. Defaults to None.

    Returns (from ``evaluate``):
        ``{'mIoU_per_image': mean over images of the per-image mean IoU, x100}``.
    """

    metric_name = 'mIoU_per_image'

    def __init__(self, ignore_index: int = 255, collect_device: str = 'cpu',
                 prefix: Optional[str] = None, **kwargs: Any) -> None:
        super().__init__(collect_device=collect_device, prefix=prefix)
        self.ignore_index = ignore_index

    def process(self, data_batch: Any, data_samples: Sequence[dict]) -> None:
        """Score each prediction of the batch on its own."""
        num_classes = len(self.dataset_meta['classes'])
        for sample in data_samples:
            pred = sample['pred_sem_seg']['data'].squeeze()
            label = sample['gt_sem_seg']['data'].squeeze().to(pred)
            self.results.append(image_miou(pred, label, num_classes, self.ignore_index))

    def compute_metrics(self, results: List[float]) -> Dict[str, float]:
        """Average the per-image mean IoUs (in percent)."""
        scored = [r for r in results if not math.isnan(r)]
        if len(scored) < len(results):
            print_log(f'PerImageIoUMetric: {len(results) - len(scored)} of {len(results)} '
                      'images have every pixel ignored and are left out', logger='current')
        value = 100.0 * math.fsum(scored) / len(scored) if scored else math.nan
        return OrderedDict([(self.metric_name, value)])


def add_per_image_miou(evaluator: Any) -> bool:
    """Give an evaluator that pools IoU (``IoUMetric``) the per-image mean IoU beside it.

    Nothing changes if the evaluator has no ``IoUMetric`` or already has a
    :class:`PerImageIoUMetric`. The new metric takes the ``IoUMetric``'s
    ``ignore_index`` and the evaluator's ``dataset_meta``.

    Returns:
        bool: whether a metric was added.
    """
    metrics = getattr(evaluator, 'metrics', None)
    if metrics is None or any(isinstance(m, PerImageIoUMetric) for m in metrics):
        return False
    pooled = next((m for m in metrics if isinstance(m, IoUMetric)), None)
    if pooled is None:
        return False
    metric = PerImageIoUMetric(ignore_index=pooled.ignore_index,
                               collect_device=pooled.collect_device)
    if getattr(evaluator, 'dataset_meta', None) is not None:
        metric.dataset_meta = evaluator.dataset_meta
    metrics.append(metric)
    return True
