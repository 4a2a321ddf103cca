"""The attacker's view of a victim config, attack specs and runner configs."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_keyprotect.attacks import AttackSpec, attack_runner_config
from mmseg_keyprotect.attacks.config import subset_indices
from mmseg_keyprotect.keys import find_key_sources
from mmseg_keyprotect.protection import Protection

DEMO = Path(__file__).resolve().parents[3] / 'configs' / 'demo'
SGD = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01))


def load(name: str) -> Config:
    return Config.fromfile(str(DEMO / name))


def test_permutation_victim_loses_its_protection():
    cfg, removed = Protection.from_config(load('fcn_r18-d8_perm-m1m6_demo.py')).attacker_view()
    assert cfg.model.type == 'EncoderDecoder' and 'protection' not in cfg.model
    assert removed.points == ['backbone.layer1:input', 'decode_head.conv_seg:input']
    assert removed.block_size is None
    assert cfg.test_cfg.type == 'TestLoop' and cfg.val_cfg.type == 'ValLoop'
    assert not find_key_sources(cfg.model)  # the attacker's model needs no key


def test_encrypted_weights_are_noted_and_removed():
    cfg, removed = Protection.from_config(load('fcn_r18-d8_perm-m6-encw_demo.py')).attacker_view()
    assert removed.encrypted_weights and cfg.model.type == 'EncoderDecoder'
    assert not Protection.from_config(load('fcn_r18-d8_perm-m6_demo.py')).attacker_view()[1].encrypted_weights


@pytest.mark.parametrize('name',
                         ['fcn_r18-d8_shf-b2_demo.py', 'fcn_r18-d8_shf-b2-preproc_demo.py'])
def test_block_cipher_victim_loses_its_cipher(name):
    victim = load(name)
    cfg, removed = Protection.from_config(victim).attacker_view()
    assert removed.block_size == 2 and removed.ciphers[0]['type'] == 'BlockShuffle'
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        types = [t['type'] for t in cfg[loader].dataset.pipeline]
        assert 'BlockShuffle' not in types and 'PackSegInputs' in types
    assert cfg.model.data_preprocessor.type == 'SegDataPreProcessor'
    assert 'cipher' not in cfg.model.data_preprocessor
    # the victim config itself is untouched
    assert any(t['type'] == 'BlockShuffle' for t in victim.test_dataloader.dataset.pipeline) \
        or 'cipher' in victim.model.data_preprocessor


def test_attack_spec_errors():
    with pytest.raises(ValueError, match="unknown attack 'steal'"):
        AttackSpec('steal', 0.1, 10, SGD)
    with pytest.raises(ValueError, match='fraction must be in \\(0, 1\\], got 0'):
        AttackSpec('finetune', 0, 10, SGD)
    with pytest.raises(ValueError, match='budget must be >= 1 iteration, got 0'):
        AttackSpec('finetune', 0.1, 0, SGD)
    with pytest.raises(ValueError, match='head_only needs head_modules'):
        AttackSpec('head_only', 0.1, 10, SGD)


def test_subset_is_fixed_by_seed_and_at_least_one_image():
    assert subset_indices(400, 0.01, 0) == subset_indices(400, 0.01, 0)
    assert len(subset_indices(400, 0.01, 0)) == 4 and len(subset_indices(400, 0.1, 0)) == 40
    assert subset_indices(400, 0.1, 0) != subset_indices(400, 0.1, 1)
    assert len(subset_indices(8, 0.01, 0)) == 1


@pytest.mark.parametrize('kind, load_from, trainable, adapters', [
    ('scratch', None, 'all', None),
    ('finetune', 'stolen.pth', 'all', None),
    ('head_only', 'stolen.pth', ['decode_head.conv_seg'], None),
    ('adapter', 'stolen.pth', [], 'adapter'),
    ('sinkhorn', 'stolen.pth', [], 'sinkhorn'),
])
def test_runner_config_per_attack(kind, load_from, trainable, adapters):
    spec = AttackSpec(kind, 0.1, 7, SGD, head_modules=['decode_head.conv_seg'])
    cfg, _ = attack_runner_config(load('fcn_r18-d8_perm-m6_demo.py'), 'stolen.pth', spec,
                                  '/tmp/w', train_size=400)
    assert cfg.model.type == 'AttackedSegmentor'
    assert cfg.model.segmentor.type == 'EncoderDecoder'
    assert cfg.load_from == load_from
    assert cfg.model.trainable == trainable
    assert (cfg.model.adapters or {}).get('kind') == adapters
    if adapters:
        assert cfg.model.adapters['points'] == ['decode_head.conv_seg:input']
    assert cfg.train_cfg.max_iters == 7 and len(cfg.train_dataloader.dataset.indices) == 40


def test_block_cipher_adapters_go_on_the_input_blocks():
    spec = AttackSpec('adapter', 0.01, 3, SGD)
    cfg, _ = attack_runner_config(load('fcn_r18-d8_shf-b2_demo.py'), 'stolen.pth', spec,
                                  '/tmp/w', train_size=400)
    assert cfg.model.adapters == dict(kind='adapter', points=['backbone:input'], block_size=2)


def test_unprotected_victim_has_nothing_to_attack():
    spec = AttackSpec('adapter', 0.01, 3, SGD)
    with pytest.raises(ValueError, match='no protection to attack'):
        attack_runner_config(load('fcn_r18-d8_baseline_demo.py'), 'x.pth', spec, '/tmp/w', 400)


def test_auto_points_come_from_the_stolen_checkpoints_descriptor(tmp_path):
    import torch
    names = ['backbone.layer3:output', 'decode_head.conv_seg:input']
    checkpoint = tmp_path / 'stolen.pth'
    torch.save({'state_dict': {}, 'meta': {'key_protection': [
        {'type': 'PointPermutation', 'point': n, 'key': 'ab'} for n in names]}}, checkpoint)
    victim = load('fcn_r18-d8_perm-m6_demo.py')
    victim.model.protection.points = 'auto'
    spec = AttackSpec(kind='adapter', fraction=0.1, budget=10, optim_wrapper=SGD)
    cfg, _ = attack_runner_config(victim, str(checkpoint), spec, str(tmp_path / 'w'), 400)
    assert cfg.model.adapters.points == names and cfg.model.adapters.recorded


def test_victim_without_best_checkpoint_falls_back_to_the_last(tmp_path):
    from mmseg_keyprotect.attacks.suite import stolen_checkpoint
    for name in ('iter_2.pth', 'iter_10.pth'):
        (tmp_path / name).write_bytes(b'')
    victim = dict(config='victim.py', work_dir=str(tmp_path))
    assert stolen_checkpoint(victim) == str(tmp_path / 'iter_10.pth')
    with pytest.raises(FileNotFoundError, match='train the victim first'):
        stolen_checkpoint(dict(config='victim.py', work_dir=str(tmp_path / 'none')))


def test_weight_matching_needs_a_reference_and_starts_from_its_own_weights():
    with pytest.raises(ValueError, match="weight_matching needs the public checkpoint"):
        AttackSpec('weight_matching', 0.1, 10, SGD)
    with pytest.raises(ValueError, match="weight_matching starts from its own weights"):
        AttackSpec('weight_matching', 0.1, 10, SGD, init='momentum', reference='public.pth')


def test_weight_matching_loads_the_matched_weights(tmp_path):
    torch.manual_seed(0)
    state = MODELS.build(load('fcn_r18-d8_baseline_demo.py').model).state_dict()
    alpha = torch.randperm(32)
    stolen = {**state, 'backbone.layer1.0.conv1.weight':
              state['backbone.layer1.0.conv1.weight'][:, alpha]}
    torch.save({'state_dict': stolen}, tmp_path / 'stolen.pth')
    torch.save({'state_dict': state}, tmp_path / 'public.pth')
    spec = AttackSpec('weight_matching', 0.1, 7, SGD, reference=str(tmp_path / 'public.pth'))
    cfg, _ = attack_runner_config(load('fcn_r18-d8_perm-m6_demo.py'), str(tmp_path / 'stolen.pth'),
                                  spec, str(tmp_path / 'w'), train_size=400)
    assert cfg.load_from == str(tmp_path / 'w' / 'matched_init.pth')
    assert cfg.model.trainable == 'all' and cfg.model.adapters is None
    matched = torch.load(cfg.load_from)['state_dict']
    assert torch.equal(matched['backbone.layer1.0.conv1.weight'],
                       state['backbone.layer1.0.conv1.weight'])
