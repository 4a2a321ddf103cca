"""Every attack config names an existing victim config and modules of the victim's model."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_keyprotect.attacks import ATTACK_KINDS, AttackSpec, attack_runner_config

REPO = Path(__file__).resolve().parents[3]
ATTACK_CONFIGS = sorted((REPO / 'configs' / 'attacks').glob('[!_]*/*.py'))


def test_there_are_demo_and_paper_attack_configs():
    names = {p.parent.name for p in ATTACK_CONFIGS}
    assert names == {'demo', 'paper'} and len(ATTACK_CONFIGS) >= 18


@pytest.mark.parametrize('path', ATTACK_CONFIGS, ids=lambda p: f'{p.parent.name}/{p.stem}')
def test_attack_config_builds_every_attack(path):
    cfg = Config.fromfile(str(path))
    assert set(cfg.attacks) <= set(ATTACK_KINDS) and set(cfg.optim_wrappers) >= set(cfg.attacks)
    victim = Config.fromfile(str(REPO / cfg.victim['config']))
    for kind in cfg.attacks:
        spec = AttackSpec(kind, cfg.fractions[0], cfg.budgets[0],
                          cfg.optim_wrappers[kind].to_dict(),
                          head_modules=list(cfg.head_modules), sinkhorn=dict(cfg.sinkhorn))
        runner_cfg, removed = attack_runner_config(victim, 'stolen.pth', spec, '/tmp/w',
                                                   train_size=1000)
        assert removed.points or removed.block_size
    # head_only builds: its module paths exist in the victim's (unprotected) model
    model = MODELS.build(runner_cfg.model.segmentor)
    modules = dict(model.named_modules())
    missing = [m for m in cfg.head_modules if m not in modules]
    assert not missing
