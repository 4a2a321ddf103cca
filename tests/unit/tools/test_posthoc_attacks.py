"""tools/posthoc_attacks.py: the data halves, the victim and attack configs it writes."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
from mmengine.config import Config

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / 'tools'))
import posthoc_attacks  # noqa: E402

from mmseg_keyprotect.attacks import attack_specs  # noqa: E402

POINTS = ['backbone.layer3:output', 'backbone.layer4:output', 'decode_head.conv_seg:input']


def test_the_training_ids_split_into_disjoint_alternate_halves(tmp_path):
    for i in (3, 0, 4, 1, 2):
        (tmp_path / f'{i:04d}.jpg').touch()
    halves = posthoc_attacks.split_ids(tmp_path)
    assert halves == {'public': ['0000', '0002', '0004'], 'owner': ['0001', '0003']}
    (tmp_path / 'more').mkdir()
    with pytest.raises(SystemExit, match='holds 0 training images'):
        posthoc_attacks.split_ids(tmp_path / 'more')


def test_the_trained_victim_is_the_baseline_with_the_same_points(tmp_path, monkeypatch):
    monkeypatch.setenv('KP_KEY_FILE', str(tmp_path / 'owner.key'))
    path = tmp_path / 'trained_config.py'
    path.write_text(posthoc_attacks.trained_victim_config(POINTS))
    cfg = Config.fromfile(str(path))
    base = Config.fromfile(str(REPO / posthoc_attacks.BASELINE))
    assert cfg.model.type == 'KeyProtectedEncoderDecoder'
    assert cfg.model.protection.points == POINTS
    assert cfg.model.protection.key == base.key == dict(file=str(tmp_path / 'owner.key'))
    assert not cfg.model.protection.get('encrypt_weights', False)
    assert cfg.model.backbone == base.model.backbone


def test_head_only_retrains_the_consumers_of_each_point():
    assert posthoc_attacks.head_modules(POINTS) == [
        'backbone.layer4.0.conv1', 'backbone.layer4.0.downsample.0', 'decode_head.convs.0',
        'decode_head.conv_cat', 'decode_head.conv_seg']
    written = {'path': 'decode_head.conv_seg', 'where': 'input', 'index': None, 'channels': 32,
               'channel_dim': 1}  # as tools/protect.py writes a point into its config
    assert posthoc_attacks.head_modules([written]) == ['decode_head.conv_seg']
    with pytest.raises(SystemExit, match=r"points \['backbone.layer1:input'\]"):
        posthoc_attacks.head_modules(['backbone.layer1:input'])


def test_the_attack_config_runs_every_attack_at_both_fractions(tmp_path):
    path = tmp_path / 'attack.py'
    path.write_text(posthoc_attacks.attack_config('posthoc', tmp_path / 'victim.py',
                                                  tmp_path / 'stolen.pth',
                                                  tmp_path / 'public.pth', ['decode_head.conv_seg']))
    cfg = Config.fromfile(str(path))
    specs = attack_specs(cfg)
    assert {(s.kind, s.fraction) for s in specs} == {
        (k, f) for k in posthoc_attacks.ATTACKS for f in posthoc_attacks.FRACTIONS}
    matching = [s for s in specs if s.kind == 'weight_matching']
    assert matching and all(s.reference == str(tmp_path / 'public.pth') for s in matching)
    assert cfg.victim.checkpoint == str(tmp_path / 'stolen.pth')
    assert cfg.name == 'posthoc'  # the results and the key-condition reports share the name


def test_schedule_options_end_the_poly_decay_with_training():
    options = posthoc_attacks.schedule_options(2000, 0.01)
    assert 'train_cfg.max_iters=2000' in options and 'param_scheduler.1.end=2000' in options
    assert 'optim_wrapper.optimizer.lr=0.01' in options
    assert 'train_cfg.val_interval=200' in options


def test_a_finetuning_loads_the_public_model_first_and_resumes_itself_after(tmp_path, monkeypatch):
    """mmengine resumes *from* load_from when both are given: only one of them is passed."""
    commands = []
    monkeypatch.setattr(posthoc_attacks, 'run_streaming', lambda cmd, *a, **k: commands.append(cmd))
    monkeypatch.setattr(posthoc_attacks, 'find_checkpoint', lambda *a: 'best.pth')
    work_dir = tmp_path / 'finetuned'
    posthoc_attacks.train('c.py', work_dir, ['x=1'], {}, '', init='public.pth')
    assert '--resume' not in commands[0] and 'load_from=public.pth' in commands[0]
    (work_dir / 'done').unlink()
    (work_dir / 'last_checkpoint').write_text('iter_200.pth')
    posthoc_attacks.train('c.py', work_dir, ['x=1'], {}, '', init='public.pth')
    assert '--resume' in commands[1] and not any('load_from' in c for c in commands[1])
    posthoc_attacks.train('c.py', work_dir, ['x=1'], {}, '', init='public.pth')
    assert len(commands) == 2  # done: not trained again
