"""The optimizer-state attack and the owner's audit, on a small model and hand-made checkpoints."""
from __future__ import annotations

import pytest
import torch
from mmseg.registry import MODELS
from scipy.stats import spearmanr

from mmseg_keyprotect.attacks import AttackSpec, correlation_audit, momentum_init
from mmseg_keyprotect.checkpoint import seal_checkpoint
from mmseg_keyprotect.models.weight_encryption import describe_module

_MODEL = dict(type='EncoderDecoder', data_preprocessor=dict(type='SegDataPreProcessor'),
              backbone=dict(type='ResNetV1c', depth=18, base_channels=8, stem_channels=8,
                            out_indices=(3, ), strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4)),
              decode_head=dict(type='FCNHead', in_channels=64, channels=8, num_convs=1,
                               num_classes=3, in_index=0))
CONV = 'backbone.layer4.1.conv2.weight'  # 64 x 64 x 3 x 3


def trained_checkpoint(model: torch.nn.Module) -> dict:
    """A checkpoint whose momentum is weight decay's share of the weights, plus noise."""
    torch.manual_seed(0)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for p in model.parameters():
        p.grad = 5e-4 * p.detach() + 1e-6 * torch.randn_like(p)
    optimizer.step()
    return dict(meta={}, state_dict=model.state_dict(), optimizer=optimizer.state_dict())


def rank_r(a: torch.Tensor, b: torch.Tensor) -> float:
    return abs(spearmanr(a.reshape(-1).numpy(), b.reshape(-1).numpy(), nan_policy='omit')[0])


def test_momentum_in_clear_gives_the_weights_back(tmp_path):
    victim = MODELS.build(_MODEL)
    torch.save(trained_checkpoint(victim), tmp_path / 'iter_1.pth')
    state = momentum_init(_MODEL, str(tmp_path / 'iter_1.pth'))
    assert rank_r(state[CONV], victim.state_dict()[CONV]) > 0.9
    fresh = MODELS.build(_MODEL).state_dict()
    assert torch.equal(state['backbone.stem.1.weight'], fresh['backbone.stem.1.weight'])  # BN


def test_sealed_momentum_gives_noise(tmp_path, key):
    victim = MODELS.build(dict(_MODEL, type='KeyProtectedEncoderDecoder',
                               protection=dict(key=key, points=[], encrypt_weights=True)))
    checkpoint = trained_checkpoint(victim)
    seal_checkpoint(checkpoint, victim, key, describe_module(victim))
    torch.save(checkpoint, tmp_path / 'iter_1.pth')
    state = momentum_init(_MODEL, str(tmp_path / 'iter_1.pth'))
    assert rank_r(state[CONV], victim.state_dict()[CONV]) < 0.1
    assert torch.isfinite(state[CONV]).all()


def test_momentum_init_needs_optimizer_state(tmp_path):
    torch.save(dict(state_dict=MODELS.build(_MODEL).state_dict()), tmp_path / 'best.pth')
    with pytest.raises(ValueError, match='holds no SGD momentum buffers'):
        momentum_init(_MODEL, str(tmp_path / 'best.pth'))


def test_audit_flags_clear_files_and_passes_sealed_ones(tmp_path, key):
    victim = MODELS.build(dict(_MODEL, type='KeyProtectedEncoderDecoder',
                               protection=dict(key=key, points=[], encrypt_weights=True)))
    clear = trained_checkpoint(victim)
    reference = {f'model/{k}': v.clone() for k, v in clear['state_dict'].items()}
    reference.update({f'param/{i}': p.detach().clone() for i, p in enumerate(victim.parameters())})
    reference.update({f'optimizer/state/{i}/momentum_buffer': s['momentum_buffer'].clone()
                      for i, s in clear['optimizer']['state'].items()})
    (tmp_path / 'clear').mkdir()
    torch.save(clear, tmp_path / 'clear' / 'iter_1.pth')
    rows = correlation_audit(str(tmp_path / 'clear'), reference)
    assert max(r['abs_r'] for r in rows) > 0.99
    assert any(r['tensor'].startswith('/optimizer/') and r['against'].startswith('param/')
               and r['abs_r'] > 0.9 for r in rows)
    seal_checkpoint(clear, victim, key, describe_module(victim))
    (tmp_path / 'sealed').mkdir()
    torch.save(clear, tmp_path / 'sealed' / 'iter_1.pth')
    rows = correlation_audit(str(tmp_path / 'sealed'), reference)
    assert rows and max(r['abs_r'] for r in rows) < 0.15


def test_attack_spec_init():
    spec = AttackSpec(kind='finetune', fraction=0.1, budget=10, optim_wrapper={},
                      init='momentum')
    assert spec.slug == 'finetune_momentum_f0.1_it10_s0'
    with pytest.raises(ValueError, match="unknown init 'weights'"):
        AttackSpec(kind='finetune', fraction=0.1, budget=10, optim_wrapper={}, init='weights')
