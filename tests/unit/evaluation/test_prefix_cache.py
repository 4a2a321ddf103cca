"""The key-independent prefix is replayed only when replaying it is exact (the guards).

The key-condition loops that share it, through mmengine's Runner:
``tests/e2e/test_condition_loops.py``.
"""
from __future__ import annotations

import contextlib
import warnings
from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from torch import nn

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import ChannelPermutation
from mmseg_keyprotect.protection.conditions import KeyCondition
from mmseg_keyprotect.evaluation.prefix_cache import KeyIndependentPrefix
from mmseg_keyprotect.protection import Protection

REPO = Path(__file__).resolve().parents[3]
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


class Toy(nn.Module):
    """conv -> (optional noise) -> keyed permutation -> conv."""

    def __init__(self, key, noise: bool = False):
        super().__init__()
        self.pre = nn.Sequential(nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4), nn.Dropout(0.5))
        self.perm = ChannelPermutation(4, key, 'toy')
        self.post = nn.Conv2d(4, 2, 1)
        self.noise = noise

    def forward(self, x):
        a = self.pre(x)
        if self.noise:  # randomness in eval mode too
            a = a + torch.randn_like(a)
        return self.post(self.perm(a))


CONDITIONS = [KeyCondition.correct(), KeyCondition.plain(),
              KeyCondition.incorrect(SecretKey.generate())]


def run_conditions(model, x, prefix=None):
    outputs = []
    with torch.no_grad():
        for i, cond in enumerate(CONDITIONS):
            share = contextlib.nullcontext() if prefix is None else (
                prefix.record() if i == 0 else prefix.replay())
            with Protection.of(model).applied(cond), share:
                outputs.append(model(x))
    return outputs


def test_a_pure_prefix_is_replayed(key):
    model = Toy(key).eval()
    prefix = KeyIndependentPrefix(model)
    run_conditions(model, torch.randn(2, 3, 4, 4), prefix)
    assert prefix.unsafe_reason is None and prefix.replayed_calls == 2


@pytest.mark.parametrize('make_unsafe, reason', [
    (lambda m: m.pre[2].train(), 'train mode'),        # active dropout
    (lambda m: m.pre[1].train(), 'train mode'),        # batch statistics
    (lambda m: setattr(m, 'noise', True), 'random'),   # noise drawn in eval mode
    (lambda m: m.pre[0].register_forward_hook(lambda *a: None), 'forward hooks'),
    (lambda m: m.pre.register_forward_pre_hook(lambda *a: None), 'forward hooks'),
])
def test_an_impure_prefix_is_not_replayed(key, make_unsafe, reason):
    model = Toy(key).eval()
    make_unsafe(model)
    x = torch.randn(2, 3, 4, 4)
    prefix = KeyIndependentPrefix(model)
    torch.manual_seed(0)
    shared = run_conditions(model, x, prefix)
    assert reason in prefix.unsafe_reason
    assert prefix.replayed_calls == 0
    torch.manual_seed(0)
    fresh = run_conditions(model, x)
    for a, b in zip(fresh, shared):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_global_forward_hooks_stop_replay(key):
    model = Toy(key).eval()
    handle = nn.modules.module.register_module_forward_hook(lambda *a: None)
    try:
        prefix = KeyIndependentPrefix(model)
        run_conditions(model, torch.randn(1, 3, 4, 4), prefix)
    finally:
        handle.remove()
    assert 'global forward hooks' in prefix.unsafe_reason and prefix.replayed_calls == 0


def test_hooks_after_the_keyed_point_do_not_stop_replay(key):
    model = Toy(key).eval()
    calls = []
    model.post.register_forward_hook(lambda *a: calls.append(1))
    prefix = KeyIndependentPrefix(model)
    run_conditions(model, torch.randn(1, 3, 4, 4), prefix)
    assert prefix.unsafe_reason is None and prefix.replayed_calls == 2
    assert len(calls) == 3  # the hook ran under every condition


# ------------------------------------- the demo model, and a model that changes a prefix output
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
