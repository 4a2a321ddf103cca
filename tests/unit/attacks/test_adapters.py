"""Attack modules: identity initialisation, what they can represent, rounding, errors."""
from __future__ import annotations

import pytest
import torch

from mmseg_keyprotect.attacks.adapters import (BlockAdapter, ChannelAdapter,
                                               SinkhornPermutation, build_point_adapter)
from mmseg_keyprotect.models.points import PointSpec


def test_channel_adapter_starts_as_identity_and_represents_a_permutation():
    x = torch.randn(2, 6, 3, 3)
    adapter = ChannelAdapter(6)
    assert torch.equal(adapter(x), x)
    alpha = torch.tensor([3, 0, 5, 1, 4, 2])
    with torch.no_grad():
        adapter.weight.copy_(torch.eye(6)[alpha])
    assert torch.allclose(adapter(x), x[:, alpha])


def test_channel_adapter_tokens_and_lazy_size():
    x = torch.randn(2, 5, 4)  # (N, L, C)
    adapter = ChannelAdapter(channel_dim=-1)
    assert torch.equal(adapter(x), x)
    assert adapter.weight.shape == (4, 4)
    with pytest.raises(ValueError, match=r'built for 4 channels, got a tensor of shape \(2, 5, 3\)'):
        adapter(torch.randn(2, 5, 3))


def test_sinkhorn_is_doubly_stochastic_and_rounds_to_a_known_permutation():
    sinkhorn = SinkhornPermutation(8, tau=0.1)
    p = sinkhorn.soft_matrix()
    assert torch.allclose(p.sum(0), torch.ones(8), atol=1e-4)
    assert torch.allclose(p.sum(1), torch.ones(8), atol=1e-4)
    alpha = torch.randperm(8, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        sinkhorn.logits.copy_(torch.eye(8)[alpha])
    assert torch.equal(sinkhorn.hard_index(), alpha)
    sinkhorn.harden()
    x = torch.randn(2, 8, 3, 3)
    assert torch.equal(sinkhorn(x), x[:, alpha])


def test_sinkhorn_rounds_even_after_divergence():
    sinkhorn = SinkhornPermutation(5)
    with torch.no_grad():
        sinkhorn.logits.fill_(float('nan'))
    assert sorted(sinkhorn.hard_index().tolist()) == list(range(5))


def test_sinkhorn_learns_a_permutation_from_examples():
    """Gradient descent on the logits finds the permutation from input/output pairs."""
    torch.manual_seed(0)
    alpha = torch.randperm(6)
    sinkhorn = SinkhornPermutation(6, tau=0.1, seed=1)
    opt = torch.optim.Adam(sinkhorn.parameters(), lr=0.1)
    for _ in range(200):
        x = torch.randn(16, 6, 2, 2)
        loss = (sinkhorn(x) - x[:, alpha]).pow(2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert torch.equal(sinkhorn.hard_index(), alpha)


def test_block_adapter_identity_and_alignment_error():
    x = torch.randn(1, 3, 8, 8)
    block = BlockAdapter(4, ChannelAdapter(48))
    assert torch.allclose(block(x), x)
    with pytest.raises(ValueError, match=r'block_size=4 .* shape \(1, 3, 6, 8\)'):
        block(torch.randn(1, 3, 6, 8))


def test_build_point_adapter_kinds():
    point = PointSpec('head', 'input')
    assert isinstance(build_point_adapter(point, 'adapter').module, ChannelAdapter)
    block = build_point_adapter(point, 'sinkhorn', block_size=2, tau=0.2)
    assert isinstance(block.module, BlockAdapter) and block.module.inner.tau == 0.2
    with pytest.raises(ValueError, match="unknown adapter kind 'rotate'"):
        build_point_adapter(point, 'rotate')
    with pytest.raises(ValueError, match=r"adapter takes no options, got \['tau'\]"):
        build_point_adapter(point, 'adapter', tau=0.1)
    with pytest.raises(ValueError, match='tau must be > 0'):
        SinkhornPermutation(4, tau=0)
