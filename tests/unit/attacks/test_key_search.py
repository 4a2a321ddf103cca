"""Key search over integer seeds: the correct seed wins; the tool reports it."""
from __future__ import annotations

import warnings

import pytest
import torch
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from mmengine.config import ConfigDict
from mmengine.structures import PixelData

from mmseg_keyprotect.attacks.key_search import pixel_accuracy, search_seed_keys
from mmseg_keyprotect.keys import WeakKeyWarning

_BACKBONE = dict(type='ResNetV1c', depth=18, base_channels=8, stem_channels=8,
                 out_indices=(3, ), strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
_HEAD = dict(type='FCNHead', in_channels=64, channels=16, num_convs=1, num_classes=4,
             in_index=0)
TRUE_SEED = 13


@pytest.fixture(scope='module')
def victim():
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', WeakKeyWarning)
        model = MODELS.build(dict(
            type='KeyProtectedEncoderDecoder', backbone=_BACKBONE, decode_head=_HEAD,
            data_preprocessor=dict(type='SegDataPreProcessor'), test_cfg=ConfigDict(mode='whole'),
            protection=dict(key=dict(seed=TRUE_SEED, published=True), points=['decode_head.conv_seg:input'])))
    return model.eval()


@pytest.fixture(scope='module')
def labelled(victim):
    """Two images labelled with the victim's own correct-key predictions."""
    torch.manual_seed(1)
    batches = []
    for _ in range(2):
        inputs = [torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8)]
        sample = SegDataSample()
        sample.set_metainfo(dict(img_shape=(32, 32), ori_shape=(32, 32), pad_shape=(32, 32)))
        batch = dict(inputs=inputs, data_samples=[sample])
        with torch.no_grad():
            pred = victim.test_step(batch)[0].pred_sem_seg.data
        labelled_sample = SegDataSample(gt_sem_seg=PixelData(data=pred))
        labelled_sample.set_metainfo(sample.metainfo)
        batches.append(dict(inputs=inputs, data_samples=[labelled_sample]))
    return batches


def test_correct_seed_is_found_and_stands_out(victim, labelled):
    result = search_seed_keys(victim, labelled, range(30))
    assert result.best_seed == TRUE_SEED
    assert result.best_score == pytest.approx(1.0)
    assert result.runner_up() < 0.99
    assert len(result.scores) == 30 and result.keys_per_second > 0


def test_search_restores_the_model_key(victim, labelled):
    before = pixel_accuracy(victim, labelled)
    search_seed_keys(victim, labelled, range(3))
    assert pixel_accuracy(victim, labelled) == before == pytest.approx(1.0)


def test_true_seed_outside_the_range_is_not_found(victim, labelled):
    result = search_seed_keys(victim, labelled, range(5))
    assert result.best_seed != TRUE_SEED and result.best_score < 1.0
