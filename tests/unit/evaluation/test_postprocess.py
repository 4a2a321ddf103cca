"""batched_postprocess gives exactly what mmseg's postprocess_result gives."""
import warnings

import pytest
import torch
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample

from mmseg_keyprotect.evaluation.postprocess import batched_postprocess


@pytest.fixture(scope='module')
def segmentor():
    cfg = dict(type='EncoderDecoder',
               backbone=dict(type='ResNetV1c', depth=18, out_indices=(3, )),
               decode_head=dict(type='FCNHead', in_channels=512, channels=8, num_convs=1,
                                num_classes=6))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return MODELS.build(cfg).eval()


def samples(metas):
    out = []
    for meta in metas:
        sample = SegDataSample(metainfo=meta)
        sample.gt_sem_seg = PixelData(data=torch.zeros(1, *meta['ori_shape'], dtype=torch.long))
        out.append(sample)
    return out


UNIFORM = [dict(ori_shape=(40, 30), img_shape=(16, 12))] * 3
MIXED = [dict(ori_shape=(40, 30)), dict(ori_shape=(20, 30)), dict(ori_shape=(40, 30))]
PADDED = [dict(ori_shape=(40, 30), padding_size=[0, 2, 0, 0])] * 3
FLIPPED = [dict(ori_shape=(40, 30), flip=True, flip_direction='horizontal')] * 3


@pytest.mark.parametrize('metas', [UNIFORM, MIXED, PADDED, FLIPPED])
def test_same_predictions_and_logits_as_mmseg(segmentor, metas):
    logits = torch.randn(3, 6, 16, 12, generator=torch.Generator().manual_seed(0))
    logits[0, :, 0, 0] = 1.0  # ties: the first maximum must win in both
    expected = segmentor.postprocess_result(logits.clone(), samples(metas))
    with batched_postprocess(segmentor):
        got = segmentor.postprocess_result(logits.clone(), samples(metas))
    assert 'postprocess_result' not in vars(segmentor)  # restored
    for e, g in zip(expected, got):
        assert torch.equal(e.pred_sem_seg.data, g.pred_sem_seg.data)
        assert e.pred_sem_seg.data.dtype == g.pred_sem_seg.data.dtype
        assert torch.equal(e.seg_logits.data, g.seg_logits.data)
