"""Following channel permutations through recorded passes (posthoc/channels.py), on small torch nets."""
from __future__ import annotations

from typing import List

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from mmseg_keyprotect.models.permutation import channel_permutation_index
from mmseg_keyprotect.models.points import attach_permutations
from mmseg_keyprotect.posthoc.channels import PointRefused, absorb_records
from mmseg_keyprotect.posthoc.trace import record_ops
from mmseg_keyprotect.protection import Protection


class _Block(nn.Module):
    """A ResNet basic block: the residual add ties its output to its input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.bn2(self.conv2(out))
        out += x
        return F.relu(out)


class _Net(nn.Module):
    """Stem, two residual blocks, a depthwise conv, a token branch with attention, a concat."""

    def __init__(self, grouped: bool = False) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU())
        self.blocks = nn.Sequential(_Block(8), _Block(8))
        self.depthwise = nn.Conv2d(8, 8, 3, padding=1, groups=4 if grouped else 8)
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2)
        self.pos = nn.Parameter(torch.randn(1, 64, 8))
        self.head = nn.Conv2d(16, 5, 1)

    def forward(self, x: Tensor) -> List[Tensor]:
        x = self.blocks(self.stem(x))
        y = F.relu(self.depthwise(x))
        tokens = y.flatten(2).transpose(1, 2) + self.pos
        query = self.norm(tokens).transpose(0, 1)
        tokens = tokens + self.attn(query, query, query)[0].transpose(0, 1)
        y = tokens.transpose(1, 2).reshape(x.shape)
        return [self.head(torch.cat([x, y], 1))]


def _randomise(net: nn.Module) -> nn.Module:
    generator = torch.Generator().manual_seed(0)
    for module in net.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.running_mean.copy_(torch.randn(module.num_features, generator=generator))
            module.running_var.uniform_(0.5, 2.0, generator=generator)
            module.weight.data.normal_(generator=generator)
            module.bias.data.normal_(generator=generator)
    return net.eval()


def _absorb(net: nn.Module, points, key, inputs: Tensor):
    perms = attach_permutations(net, points, key)
    with torch.no_grad():
        net(inputs)
        hooks = {id(p.index): (p.purpose, p.index, None) for p in perms}
        params = {id(t): n for n, t in list(net.named_parameters()) + list(net.named_buffers())}
        records, outputs = record_ops(lambda: net(inputs))
    return absorb_records(records, outputs, params, hooks)


def _outputs(net: nn.Module, inputs: Tensor) -> Tensor:
    with torch.no_grad():
        return net(inputs)[0]


@pytest.mark.parametrize('points', [['stem'], ['blocks.0'], ['stem', 'head:input'],
                                    ['depthwise'], [dict(path='norm', channel_dim=-1)]])
def test_absorbed_model_is_exact_and_plain_is_not(points, key):
    torch.manual_seed(0)
    net = _randomise(_Net())
    inputs = torch.randn(2, 3, 8, 8)
    expected = _outputs(net, inputs)
    changes = _absorb(net, points, key, inputs)
    net.load_state_dict({**net.state_dict(), **changes})
    assert changes, 'the stored weights must change'
    assert (_outputs(net, inputs) - expected).abs().max() <= 1e-5
    with Protection.of(net).applied('plain'):
        assert (_outputs(net, inputs) - expected).abs().max() > 1e-2


def test_residual_stream_is_permuted_back_to_its_producers(key):
    net = _randomise(_Net())
    changes = _absorb(net, ['stem'], key, torch.randn(1, 3, 8, 8))
    # the stream after the stem: each block's last conv and norm produce it permuted
    assert {'blocks.0.conv2.weight', 'blocks.0.bn2.running_mean', 'blocks.1.conv2.weight',
            'blocks.0.conv1.weight', 'depthwise.weight', 'head.weight'} <= set(changes)
    alpha = channel_permutation_index(key, 'stem:output', 8)
    weight = net.blocks[0].conv1.weight
    assert torch.equal(changes['blocks.0.conv1.weight'], weight[:, alpha])


def test_rekeyed_indices_compose(key, other_key):
    net = _randomise(_Net())
    inputs = torch.randn(1, 3, 8, 8)
    net.load_state_dict({**net.state_dict(), **_absorb(net, ['stem'], key, inputs)})
    expected = _outputs(net, inputs)  # under key
    perm = net.keyprotect_points[0]
    beta = channel_permutation_index(other_key, perm.purpose, 8)
    with torch.no_grad():
        params = {id(t): n for n, t in list(net.named_parameters()) + list(net.named_buffers())}
        records, outputs = record_ops(lambda: net(inputs))
    changes = absorb_records(records, outputs, params, {id(perm.index): (perm.purpose, beta,
                                                                         perm.index)})
    net.load_state_dict({**net.state_dict(), **changes})
    perm.use_key(other_key)
    assert (_outputs(net, inputs) - expected).abs().max() <= 1e-5
    perm.use_key(key)
    assert (_outputs(net, inputs) - expected).abs().max() > 1e-2


@pytest.mark.parametrize('points, grouped, reason', [
    (['head'], False, 'reaches the output of the model'),
    (['blocks.1.conv2'], False, 'cannot be permuted the same way'),
    (['blocks.1'], True, 'groups=4'),
])
def test_refusals_name_the_point_and_the_reason(points, grouped, reason, key):
    net = _randomise(_Net(grouped))
    with pytest.raises(PointRefused) as error:
        _absorb(net, points, key, torch.randn(1, 3, 8, 8))
    message = str(error.value)
    assert '\n' not in message
    assert message.startswith(f"point '{points[0]}:output'") and reason in message
