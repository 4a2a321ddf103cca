"""KeyConditionTestLoop / KeyConditionValLoop driven without a Runner (a hook recorder).

The same loops under mmengine's Runner and mmseg's tools: ``tests/e2e/test_condition_loops.py``.
"""
from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from mmseg_keyprotect.engine.hooks import CheckpointSealHook, KeyProtectionHook
from mmseg_keyprotect.evaluation.loops import KeyConditionTestLoop, KeyConditionValLoop
from mmseg_keyprotect.protection import Protection
from tests.unit.evaluation.conftest import demo_loader, demo_model, iou_evaluator


def test_the_test_loop_reports_every_condition(recorder_for, data_root):
    model = demo_model()
    runner = recorder_for(model)
    loader = demo_loader(data_root)
    loop = KeyConditionTestLoop(runner, loader, iou_evaluator(), incorrect=2, seed=3)
    assert [type(h) for h in runner.hooks] == [KeyProtectionHook, CheckpointSealHook]
    assert Protection.of(model).unsized_points  # the permutation learns its channels ...
    metrics = loop.run()
    assert not Protection.of(model).unsized_points  # ... from the batch run before drawing keys
    assert {'correct/mIoU', 'plain/mIoU', 'incorrect/mIoU_mean', 'incorrect/mIoU_std',
            'incorrect/mIoU_min', 'incorrect/mIoU_max', 'correct/mIoU_per_image'} <= set(metrics)
    # mmengine's hook order; the iteration hooks once per batch, not per condition
    assert runner.called() == ['before_test', 'before_test_epoch'] + \
        ['before_test_iter', 'after_test_iter'] * 2 + ['after_test_epoch', 'after_test']
    assert dict(runner.calls)['after_test_epoch'] == {'metrics': metrics}
    report = json.loads((Path(runner.work_dir) / 'key_conditions.json').read_text())
    assert report == loop.report
    assert list(report['per_condition']) == ['correct', 'plain', 'incorrect/000',
                                              'incorrect/001']
    assert report['dataset_size'] == 4 and report['incorrect_seed'] == 3
    assert report['protection'] == Protection.of(model, loader).describe()
    assert report['prefix_replay_fallback'] is None
    assert '| incorrect (mean ± std [min, max], 2 keys) |' in \
        (Path(runner.work_dir) / 'key_conditions.md').read_text()
    per = report['per_condition']
    assert per['correct'] != per['plain'] and per['incorrect/000'] != per['incorrect/001']
    assert all(part.key_condition == 'correct' for part in Protection.of(model).parts)


def test_the_val_loop_keeps_plain_names_for_the_correct_key(recorder_for, data_root):
    runner = recorder_for(demo_model())
    metrics = KeyConditionValLoop(runner, demo_loader(data_root), iou_evaluator(),
                                  plain=True).run()
    assert 'mIoU' in metrics and 'plain/mIoU' in metrics
    assert not any(name.startswith(('correct/', 'incorrect/')) for name in metrics)
    assert runner.called()[:2] == ['before_val', 'before_val_epoch']
    assert runner.called()[-2:] == ['after_val_epoch', 'after_val']


def test_an_unprotected_model_is_evaluated_once(recorder_for, data_root):
    runner = recorder_for(demo_model(points=None))
    metrics = KeyConditionTestLoop(runner, demo_loader(data_root), iou_evaluator(),
                                   incorrect=3).run()
    assert {name.split('/')[0] for name in metrics} == {'correct'}


@pytest.mark.parametrize('kwargs, match', [
    (dict(incorrect=-1), 'non-negative int, got -1'),
    (dict(incorrect=True), 'non-negative int, got True'),
    (dict(incorrect=2.0), 'non-negative int, got 2.0'),
    (dict(correct=False, plain=False, incorrect=0), 'no key condition selected'),
])
def test_bad_conditions_are_refused_when_the_loop_is_built(recorder_for, data_root, kwargs,
                                                            match):
    with pytest.raises(ValueError, match=match):
        KeyConditionTestLoop(recorder_for(torch.nn.Identity()), demo_loader(data_root),
                             iou_evaluator(), **kwargs)
