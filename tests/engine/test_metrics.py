"""The fast intersect_and_union equals mmseg's IoUMetric.intersect_and_union exactly."""
import pytest
import torch
from mmseg.evaluation.metrics import IoUMetric

from mmseg_keyprotect.engine.metrics import intersect_and_union, use_fast_iou


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
