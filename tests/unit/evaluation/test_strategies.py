"""ConditionEvaluation: one pass with replay equals one pass per condition (no Runner).

The strategies under mmengine's Runner (persistent workers, DDP): ``tests/e2e/``.
"""
from __future__ import annotations

import pytest
import torch

from mmseg_keyprotect.evaluation.strategies import ConditionEvaluation, restart_workers
from mmseg_keyprotect.protection import Protection
from tests.unit.evaluation.conftest import SEED_KEY, demo_loader, demo_model, iou_evaluator

SHF = dict(type='BlockShuffle', block_size=2, key=SEED_KEY, num_channels=3)


def evaluate(recorder_for, model, loader, **kwargs):
    """ConditionEvaluation of correct, plain and 2 incorrect keys; (evaluation, results, runner)."""
    protection = Protection.of(model, loader)
    if protection.unsized_points:  # a permutation learns its channel count on a first forward
        with torch.no_grad():
            model.test_step(next(iter(loader)))
    conditions, _ = protection.conditions(incorrect=2, seed=0)
    runner = recorder_for(model)
    evaluator = iou_evaluator()
    evaluator.dataset_meta = loader.dataset.metainfo  # what mmengine's TestLoop sets
    evaluation = ConditionEvaluation(runner, loader, evaluator, conditions, **kwargs)
    return evaluation, evaluation.run('test'), runner


@pytest.mark.parametrize('points, cipher', [
    (['decode_head.conv_seg:input'], None),  # the model's prefix is replayed
    (None, SHF),  # the cipher is applied to batches loaded plain
])
def test_one_pass_with_replay_equals_one_pass_per_condition(recorder_for, data_root, monkeypatch,
                                                           points, cipher):
    loader = demo_loader(data_root, cipher)
    model = demo_model(points)
    fast, fast_results, runner = evaluate(recorder_for, model, loader)
    assert fast.prefix_fallback is None
    assert runner.called() == ['before_test_iter', 'after_test_iter'] * 2  # first condition
    monkeypatch.setattr(Protection, 'ciphers_replayable', property(lambda self: False))
    _, slow_results, _ = evaluate(recorder_for, model, loader, share_prefix=False)
    assert fast_results == slow_results
    assert fast_results['correct'] != fast_results['plain']
    assert fast_results['incorrect/000'] != fast_results['incorrect/001']
    parts = Protection.of(model, loader).parts
    assert parts and all(part.key_condition == 'correct' for part in parts)


def test_a_hook_before_the_keyed_point_stops_the_replay(recorder_for, data_root):
    loader = demo_loader(data_root)
    model = demo_model()
    _, reference, _ = evaluate(recorder_for, model, loader, share_prefix=False)
    calls = []
    model.backbone.layer1.register_forward_hook(lambda *args: calls.append(1))
    evaluation, results, _ = evaluate(recorder_for, model, loader)
    assert 'backbone.layer1' in evaluation.prefix_fallback
    assert 'has forward hooks' in evaluation.prefix_fallback
    assert results == reference
    assert len(calls) == 2 * 4  # 2 batches x 4 conditions: every pass ran layer1


def test_a_cipher_followed_by_an_image_transform_gets_a_pass_per_condition(recorder_for,
                                                                           data_root):
    after = [dict(type='RandomFlip', prob=0.0)]  # the identity, but not known to be one
    loader = demo_loader(data_root, SHF, after)
    assert not Protection.of(loader).ciphers_replayable
    _, results, runner = evaluate(recorder_for, demo_model(None), loader)
    assert results['correct'] != results['plain']
    assert runner.called() == ['before_test_iter', 'after_test_iter'] * 2


def test_restart_workers_shuts_the_persistent_iterator_down(data_root):
    loader = demo_loader(data_root)

    class Iterator:
        shut = False

        def _shutdown_workers(self):
            self.shut = True

    iterator = Iterator()
    loader._iterator = iterator
    restart_workers(loader)
    assert iterator.shut and loader._iterator is None
    restart_workers(loader)  # nothing to restart: no error
