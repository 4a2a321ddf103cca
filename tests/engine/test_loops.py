"""Tests for the key-condition loops and the shared key-independent prefix."""
from __future__ import annotations

import json
import uuid
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg.registry import MODELS

from mmseg_keyprotect.evaluation import strategies as strategies_module
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.evaluation.conditions import KeyCondition
from mmseg_keyprotect.evaluation.prefix_cache import KeyIndependentPrefix
from mmseg_keyprotect.protection import Protection

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / 'configs' / 'demo' / 'fcn_r18-d8_baseline_demo.py'
KEY = dict(seed=21, published=True)
POINTS = {
    'm1': ['backbone.layer1:input'],
    'm2': ['backbone.layer1'],
    'm3': ['backbone.layer2'],
    'm4': ['backbone.layer3'],
    'm5': ['backbone.layer4'],
    'm6': ['decode_head.conv_seg:input'],
    'm1m6': ['backbone.layer1:input', 'decode_head.conv_seg:input'],
}


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


@pytest.mark.parametrize('points', ['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm1m6'])
def test_prefix_replay_gives_the_same_logits(points, monkeypatch):
    cfg = Config.fromfile(str(DEMO_CONFIG))
    cfg.model.type = 'KeyProtectedEncoderDecoder'
    cfg.model.protection = dict(key=KEY, points=POINTS[points])
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(cfg.model).eval()
    x = torch.randn(2, 3, 64, 64)
    conditions = [KeyCondition.correct(), KeyCondition.plain(),
                  KeyCondition.incorrect(SecretKey.generate())]
    with torch.no_grad():
        fresh = []
        for cond in conditions:
            with Protection.of(model).applied(cond):
                fresh.append(model(x, mode='tensor'))
        prefix = KeyIndependentPrefix(model)
        backbone_calls = []
        # Count layer4's computations (a forward hook would itself stop the replay).
        layer4, forward = model.backbone.layer4, type(model.backbone.layer4).forward

        def counting_forward(self, *args, **kwargs):
            if self is layer4:
                backbone_calls.append(1)
            return forward(self, *args, **kwargs)

        monkeypatch.setattr(type(layer4), 'forward', counting_forward)
        shared = []
        for i, cond in enumerate(conditions):
            with Protection.of(model).applied(cond), (prefix.record() if i == 0 else prefix.replay()):
                shared.append(model(x, mode='tensor'))
    for a, b in zip(fresh, shared):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.equal(fresh[0], fresh[1]) and not torch.equal(fresh[0], fresh[2])
    assert prefix.replayed_calls >= 2
    # Model-6 reuses the whole backbone (layer4 runs once); Model-1..4 run layer4 per
    # condition; Model-5 permutes layer4's output, so layer4 itself runs per condition too.
    assert len(backbone_calls) == (1 if points == 'm6' else 3)
    assert prefix.unsafe_reason is None


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
    monkeypatch.setattr(strategies_module, '_ciphers_applicable_after_loading', lambda _: False)
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
    monkeypatch.setattr(strategies_module, '_ciphers_applicable_after_loading', lambda _: False)
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


class InPlaceAfterPrefix(torch.nn.Module):
    """A toy model whose code modifies a prefix module's output in place."""

    def __init__(self, key):
        super().__init__()
        from mmseg_keyprotect.models import ChannelPermutation
        self.pre = torch.nn.Conv2d(3, 4, 1)
        self.perm = ChannelPermutation(4, key, 'toy')
        self.post = torch.nn.Conv2d(4, 2, 1)

    def forward(self, x, in_place=True):
        a = self.pre(x)
        if in_place:
            a.mul_(2)
        return self.post(self.perm(a))


@pytest.mark.parametrize('in_place', [True, False])
def test_prefix_survives_in_place_modification(in_place):
    model = InPlaceAfterPrefix(SecretKey.generate()).eval()
    x = torch.randn(1, 3, 4, 4)
    conditions = [KeyCondition.correct(), KeyCondition.plain(),
                  KeyCondition.incorrect(SecretKey.generate())]
    prefix = KeyIndependentPrefix(model)
    with torch.no_grad():
        fresh = []
        for cond in conditions:
            with Protection.of(model).applied(cond):
                fresh.append(model(x, in_place))
        shared = []
        for i, cond in enumerate(conditions):
            with Protection.of(model).applied(cond), (prefix.record() if i == 0 else prefix.replay()):
                shared.append(model(x, in_place))
    for a, b in zip(fresh, shared):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert prefix.invalidated is in_place
    assert prefix.replayed_calls == (0 if in_place else 2)
