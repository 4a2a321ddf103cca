"""The key-independent prefix is replayed only when replaying it is exact (the guards)."""
from __future__ import annotations

import contextlib

import pytest
import torch
from torch import nn

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import ChannelPermutation
from mmseg_keyprotect.evaluation.conditions import KeyCondition
from mmseg_keyprotect.evaluation.prefix_cache import KeyIndependentPrefix
from mmseg_keyprotect.protection import Protection


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
