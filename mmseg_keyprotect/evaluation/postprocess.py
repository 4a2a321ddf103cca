"""Batched, exactly equal ``postprocess_result`` for evaluating many key conditions.

mmseg's ``BaseSegmentor.postprocess_result`` resizes the logits of each image
to its original shape and takes the ``argmax`` over classes one image at a
time, with the reduction over the (outermost) class axis. Done once per image
and key condition, that dominates evaluating 100+ conditions on a CPU. When
every image of the batch has the same original shape, no padding and no flip
(the usual test setting), :func:`batched_postprocess` resizes the whole batch
at once and takes the ``argmax`` in channels-last layout: the same values and
the same (first-maximum) indices, produced faster. Anything else falls back to
mmseg's method.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, List, Optional

from mmengine.structures import PixelData
from mmseg.models.segmentors import BaseSegmentor
from mmseg.models.utils import resize
from torch import Tensor, nn

__all__ = ['batched_postprocess']


def _uniform(seg_logits: Tensor, data_samples: Optional[List]) -> bool:
    """True if mmseg would treat every image the same: one shape, no padding, no flip."""
    if not data_samples or seg_logits.shape[1] < 2:
        return False
    metas = [sample.metainfo for sample in data_samples]
    for meta in metas:
        padding = meta.get('img_padding_size', meta.get('padding_size', [0] * 4))
        if any(padding) or meta.get('flip', None) or 'ori_shape' not in meta:
            return False
    return len({tuple(meta['ori_shape']) for meta in metas}) == 1


@contextlib.contextmanager
def batched_postprocess(model: nn.Module) -> Iterator[None]:
    """Within the block, ``model`` post-processes uniform batches in one go.

    Args:
        model: a segmentor, possibly wrapped (DDP); other models are left as they are.
    """
    segmentor = getattr(model, 'module', model)
    if not isinstance(segmentor, BaseSegmentor):
        yield
        return
    original = segmentor.postprocess_result

    def postprocess_result(seg_logits: Tensor, data_samples: Optional[List] = None) -> List:
        if not _uniform(seg_logits, data_samples):
            return original(seg_logits, data_samples)
        logits = resize(seg_logits, size=data_samples[0].metainfo['ori_shape'],
                        mode='bilinear', align_corners=segmentor.align_corners, warning=False)
        preds = logits.permute(0, 2, 3, 1).contiguous().argmax(dim=-1)
        for i, sample in enumerate(data_samples):
            sample.set_data({'seg_logits': PixelData(data=logits[i]),
                             'pred_sem_seg': PixelData(data=preds[i:i + 1])})
        return data_samples

    segmentor.postprocess_result = postprocess_result
    try:
        yield
    finally:
        del segmentor.postprocess_result
