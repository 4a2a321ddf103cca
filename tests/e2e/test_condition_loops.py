"""The key-condition loops through mmengine's Runner, sharing the key-independent prefix.

The prefix replay itself, on the same demo model: ``tests/unit/evaluation/test_prefix_cache.py``.
"""
from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_keyprotect.protection import Protection
from tests.unit.evaluation.test_prefix_cache import DEMO_CONFIG, KEY, POINTS


@pytest.fixture
def data_root(synthetic_voc) -> str:
    return str(synthetic_voc)


def demo_cfg(tmp_path: Path, data_root: str, protection: str = 'perm-m6',
             incorrect: int = 3, num_workers: int = 0, persistent: bool = False,
             share_prefix: bool = True) -> Config:
    """The demo FCN-R18 on the tiny dataset with the given protection and test loop."""
    cfg = Config.fromfile(str(DEMO_CONFIG))
    cfg.work_dir = str(tmp_path / 'work')
    cfg.experiment_name = f'test_{uuid.uuid4().hex[:8]}'
    cfg.default_hooks.visualization = dict(type='SegVisualizationHook')
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].dataset.data_root = data_root
        cfg[split].batch_size = 2
        cfg[split].num_workers = num_workers
        cfg[split].persistent_workers = persistent
    cfg.test_cfg = dict(type='KeyConditionTestLoop', incorrect=incorrect, seed=0,
                        share_prefix=share_prefix)
    if protection.startswith('perm-'):
        cfg.model.type = 'KeyProtectedEncoderDecoder'
        cfg.model.protection = dict(key=KEY, points=POINTS[protection[5:]])
    elif protection == 'shf':
        pipeline = cfg.test_dataloader.dataset.pipeline
        pipeline.insert(len(pipeline) - 1, dict(type='BlockShuffle', block_size=4, key=KEY))
    elif protection == 'shf-preproc':  # the same cipher, in the data preprocessor
        cfg.model.data_preprocessor.update(type='BlockCipherSegDataPreProcessor', cipher=dict(
            type='BlockShuffle', block_size=4, key=KEY))
    return cfg


def run_test(cfg: Config) -> tuple:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        runner = Runner.from_cfg(cfg)
        torch.manual_seed(0)
        metrics = runner.test()
    return runner, metrics


def test_test_loop_reports_every_condition(tmp_path, data_root):
    cfg = demo_cfg(tmp_path, data_root, 'perm-m6', incorrect=3)
    runner, metrics = run_test(cfg)
    work = Path(cfg.work_dir)
    report = json.loads((work / 'key_conditions.json').read_text())
    summary = report['summary']
    assert set(summary) == {'correct', 'plain', 'incorrect'}
    assert summary['incorrect']['num_keys'] == 3
    for name in ('aAcc', 'mIoU', 'mAcc'):
        assert type(summary['correct'][name]) is float
        inc = [report['per_condition'][f'incorrect/{i:03d}'][name] for i in range(3)]
        assert summary['incorrect']['min'][name] == min(inc)
        assert summary['incorrect']['max'][name] == max(inc)
        assert abs(summary['incorrect']['mean'][name] - sum(inc) / 3) < 1e-9
    assert report['protection'][0]['type'] == 'PointPermutation'
    assert report['protection'][0]['point'] == 'decode_head.conv_seg:input'
    assert set(metrics) >= {'correct/mIoU', 'plain/mIoU', 'incorrect/mIoU_mean',
                            'incorrect/mIoU_std', 'incorrect/mIoU_min', 'incorrect/mIoU_max'}
    assert report['incorrect_rejected_duplicates'] == 0  # 64! orders: no duplicate
    assert 0 <= summary['correct']['mIoU_per_image'] <= 100
    table = (work / 'key_conditions.md').read_text()
    assert table.startswith('| condition | aAcc | mIoU | mAcc | mIoU_per_image |')
    assert '| incorrect (mean ± std [min, max], 3 keys) |' in table
    # The conditions were switched during the loop and restored afterwards.
    keyed = Protection.of(runner.model).parts
    assert keyed and all(c.key_condition == 'correct' for c in keyed)
    # Per-condition predictions really differ (an untrained model still reacts to the key).
    per = report['per_condition']
    assert per['correct'] != per['plain'] and per['correct'] != per['incorrect/000']
    assert per['incorrect/000'] != per['incorrect/001']


@pytest.mark.parametrize('protection', ['perm-m2', 'perm-m3', 'perm-m4', 'perm-m5',
                                        'perm-m6', 'shf'])
def test_single_pass_equals_one_pass_per_condition(tmp_path, data_root, protection,
                                                   monkeypatch):
    runner, fast = run_test(demo_cfg(tmp_path / 'fast', data_root, protection))
    assert runner.test_loop.prefix_fallback is None  # the prefix was replayed
    monkeypatch.setattr(Protection, 'ciphers_replayable', property(lambda self: False))
    _, slow = run_test(demo_cfg(tmp_path / 'slow', data_root, protection, share_prefix=False))
    assert fast == slow
    assert fast['correct/mIoU_per_image'] == slow['correct/mIoU_per_image']


def test_loop_falls_back_when_the_prefix_has_hooks(tmp_path, data_root):
    """A forward hook before the keyed point: every condition runs the whole network."""
    _, reference = run_test(demo_cfg(tmp_path / 'ref', data_root, 'perm-m6',
                                     share_prefix=False))
    cfg = demo_cfg(tmp_path / 'hooked', data_root, 'perm-m6')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        runner = Runner.from_cfg(cfg)
    calls = []
    runner.model.backbone.layer1.register_forward_hook(lambda *a: calls.append(1))
    torch.manual_seed(0)
    metrics = runner.test()
    assert 'has forward hooks' in runner.test_loop.prefix_fallback
    report = json.loads((Path(cfg.work_dir) / 'key_conditions.json').read_text())
    assert 'has forward hooks' in report['prefix_replay_fallback']
    # 2 batches x 5 conditions, plus the one batch that sizes the lazy permutations
    assert len(calls) == 2 * 5 + 1
    assert metrics == reference


def test_preprocessor_cipher_gives_the_pipeline_ciphers_metrics(tmp_path, data_root):
    """A checkpoint saved with the cipher in the pipeline, tested with it in the preprocessor."""
    runner, pipeline = run_test(demo_cfg(tmp_path / 'pipeline', data_root, 'shf'))
    checkpoint = tmp_path / 'pipeline.pth'
    torch.save({'state_dict': runner.model.state_dict(), 'meta': {
        'key_protection': Protection.of(runner.model, runner.test_dataloader).describe()}},
        checkpoint)
    cfg = demo_cfg(tmp_path / 'preproc', data_root, 'shf-preproc')
    cfg.load_from = str(checkpoint)
    runner, preproc = run_test(cfg)
    assert preproc == pipeline
    assert pipeline['correct/mIoU'] != pipeline['plain/mIoU']
    keyed = Protection.of(runner.model).parts
    assert [type(c).__name__ for c in keyed] == ['BlockCipherSegDataPreProcessor']
    assert keyed[0].key_condition == 'correct'  # restored after the loop
    report = json.loads((Path(cfg.work_dir) / 'key_conditions.json').read_text())
    assert report['protection'] == [{'block_size': 4, 'key': keyed[0].correct_key.fingerprint,
                                     'type': 'BlockShuffle'}]


def test_persistent_workers_see_every_condition(tmp_path, data_root, monkeypatch):
    _, reference = run_test(demo_cfg(tmp_path / 'ref', data_root, 'shf'))
    runner, fast = run_test(demo_cfg(tmp_path / 'fast', data_root, 'shf', num_workers=1,
                                     persistent=True))
    assert fast == reference
    monkeypatch.setattr(Protection, 'ciphers_replayable', property(lambda self: False))
    _, slow = run_test(demo_cfg(tmp_path / 'slow', data_root, 'shf', num_workers=1,
                                persistent=True))
    assert slow == reference
    assert reference['correct/mIoU'] != reference['plain/mIoU']
    # After the loop, the pipeline is back to the correct key.
    cipher = Protection.of(runner.test_dataloader).parts[0]
    assert cipher.key_condition == 'correct'


def test_unprotected_model_is_evaluated_once(tmp_path, data_root):
    cfg = demo_cfg(tmp_path, data_root, protection='none', incorrect=5)
    _, metrics = run_test(cfg)
    report = json.loads((Path(cfg.work_dir) / 'key_conditions.json').read_text())
    assert list(report['per_condition']) == ['correct']
    assert report['protection'] == []
    assert 'incorrect/mIoU_mean' not in metrics and 'correct/mIoU' in metrics
