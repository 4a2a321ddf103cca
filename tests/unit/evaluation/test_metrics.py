"""The fast intersect_and_union equals mmseg's IoUMetric.intersect_and_union exactly."""
import pytest
import torch
from mmseg.evaluation.metrics import IoUMetric

from mmseg_keyprotect.evaluation.metrics import intersect_and_union, use_fast_iou


@pytest.mark.parametrize('num_classes', [1, 2, 6, 21, 150])
@pytest.mark.parametrize('seed', [0, 1])
def test_bit_identical_to_mmseg(num_classes, seed):
    g = torch.Generator().manual_seed(seed)
    pred = torch.randint(0, num_classes, (37, 53), generator=g)
    # labels: in range, ignored (255) and out of range (num_classes .. +3) values
    label = torch.randint(0, num_classes + 4, (37, 53), generator=g)
    label[torch.rand(37, 53, generator=g) < 0.2] = 255
    label[:3] = pred[:3]  # make sure there are intersections
    expected = IoUMetric.intersect_and_union(pred, label, num_classes, 255)
    got = intersect_and_union(pred, label, num_classes, 255)
    for e, o in zip(expected, got):
        assert e.dtype == o.dtype and e.device == o.device
        assert torch.equal(e, o)


def test_use_fast_iou_only_touches_plain_iou_metrics():

    class MyIoU(IoUMetric):
        pass

    plain, custom = IoUMetric(), MyIoU()
    use_fast_iou([plain, custom, object()])
    assert plain.intersect_and_union is intersect_and_union
    assert 'intersect_and_union' not in vars(custom)
    assert IoUMetric.intersect_and_union is not intersect_and_union


def _sample(pred, label):
    return {'pred_sem_seg': {'data': torch.tensor(pred)[None]},
            'gt_sem_seg': {'data': torch.tensor(label)[None]}}


def test_per_image_miou_matches_a_hand_computation():
    from mmseg_keyprotect.evaluation.metrics import PerImageIoUMetric
    metric = PerImageIoUMetric(ignore_index=255)
    metric.dataset_meta = {'classes': ('bg', 'a', 'b')}
    samples = [
        # The ignored pixel (255) is left out, and with it the only prediction of class 2.
        # Scored pixels: pred 0 0 1 0 1, GT 0 0 1 1 0. Class 0: I=2, U=4 -> 1/2;
        # class 1: I=1, U=3 -> 1/3; class 2 in neither -> not counted.
        _sample([[0, 0, 1], [0, 1, 2]], [[0, 0, 1], [1, 0, 255]]),
        # all background predicted, GT half class 2: class 0 I=2 U=4 -> 1/2, class 2 -> 0
        _sample([[0, 0], [0, 0]], [[0, 0], [2, 2]]),
        # perfect, one class present: 1
        _sample([[1, 1]], [[1, 1]]),
        # every pixel ignored: no IoU, left out of the average
        _sample([[0, 1]], [[255, 255]]),
    ]
    metric.process({}, samples)
    result = metric.compute_metrics(metric.results)
    by_hand = ((1 / 2 + 1 / 3) / 2 + (1 / 2 + 0) / 2 + 1.0) / 3
    assert result == {'mIoU_per_image': pytest.approx(100 * by_hand, abs=1e-9)}
    # mmseg's pooled mIoU on the same images is a different number (sums first)
    pooled = IoUMetric(iou_metrics=['mIoU'])
    pooled.dataset_meta = metric.dataset_meta
    pooled.process({}, samples)
    assert pooled.compute_metrics(pooled.results)['mIoU'] != pytest.approx(100 * by_hand,
                                                                           abs=0.01)


def test_per_image_miou_is_registered_and_added_beside_iou_metric():
    from mmengine.evaluator import Evaluator
    from mmseg.registry import METRICS

    from mmseg_keyprotect.evaluation.metrics import PerImageIoUMetric, add_per_image_miou
    assert METRICS.get('PerImageIoUMetric') is PerImageIoUMetric
    evaluator = Evaluator([dict(type='IoUMetric', ignore_index=7)])
    evaluator.dataset_meta = {'classes': ('a', 'b')}
    assert add_per_image_miou(evaluator)
    assert not add_per_image_miou(evaluator)  # only once
    added = evaluator.metrics[-1]
    assert isinstance(added, PerImageIoUMetric) and added.ignore_index == 7
    assert added.dataset_meta == {'classes': ('a', 'b')}
    assert not add_per_image_miou(Evaluator([]))  # nothing to put it beside
