"""A protected DepthEstimator under mmseg's Runner: the key-condition test loop reports DepthMetric.

The model is mmseg's ``DepthEstimator`` with a narrow ResNet-18 and VPD's depth head (real
mmseg parts, no Stable Diffusion; ``tests/unit/models/test_protected.py``), protected with
``points='auto'`` and encrypted weights; the data are the synthetic NYU-layout set read by
mmseg's ``NYUDataset``. VPD itself (Stable Diffusion's ``ldm``, the families extra):
``tests/e2e/test_sweep.py``.
"""
from __future__ import annotations

import json
import warnings

import torch
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

from mmseg_keyprotect.testing.sweep import run_test_loop
from tests.unit.models.test_protected import small_depth_estimator


def test_key_condition_loop_reports_depth_metrics_per_condition(key, tmp_path):
    init_default_scope('mmseg')
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(small_depth_estimator(key)).eval()
        metrics = run_test_loop(model, tmp_path / 'data', tmp_path / 'work', 64)
    for name in ('correct/rmse', 'plain/rmse', 'incorrect/rmse_mean', 'correct/d1'):
        assert name in metrics, sorted(metrics)
    assert metrics['correct/rmse'] != metrics['plain/rmse']
    assert metrics['correct/rmse'] != metrics['incorrect/rmse_mean']
    report = json.loads(next((tmp_path / 'work').rglob('key_conditions.json')).read_text())
    assert report['dataset_size'] == 1
    parts = report['protection']
    assert [p['point'] for p in parts if 'point' in p] == \
        [f'backbone.layer{i}:output' for i in range(1, 5)] + ['decode_head.depth_pred_layer.2:input']
    assert {'type': 'WeightEncryption', 'key': parts[0]['key']} in parts
