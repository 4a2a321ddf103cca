"""configs/stanford_background/: each config is the one base plus only its protection.

(Every config also loads and builds in test_protocol_configs.py; the generator is in sync
there too.) Two training iterations of each on a fixture: tests/e2e/test_stanford_configs.py.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict

import pytest
from mmengine.config import Config

from mmseg_keyprotect.reproduction import INPUT, MODEL

REPO = Path(__file__).resolve().parents[3]
FOLDER = REPO / 'configs' / 'stanford_background'
BASE = FOLDER / '_base_' / f'{MODEL}_{INPUT}.py'
CONFIGS = sorted(FOLDER.glob('*.py'))
POINTS = ['backbone.layer1:input', 'backbone.layer1', 'backbone.layer2', 'backbone.layer3',
          'backbone.layer4', 'decode_head.conv_seg:input']


def _without_protection(cfg: Config) -> Dict[str, Any]:
    """The config as a dict, with the cipher steps and the model's protection removed."""
    out = copy.deepcopy(cfg.to_dict())
    out.pop('filename', None)
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        pipeline = out[loader]['dataset']['pipeline']
        out[loader]['dataset']['pipeline'] = [s for s in pipeline
                                              if not s['type'].startswith('Block')]
    for name in ('train_pipeline', 'test_pipeline'):
        out[name] = [s for s in out[name] if not s['type'].startswith('Block')]
    out['model'].pop('protection', None)
    out['model']['type'] = 'EncoderDecoder'
    return out


def test_the_rows_are_all_there():
    names = {p.name for p in CONFIGS}
    expected = {f'fcn_r18-d16_{p}6k_stanford-128x96.py'
                for p in ('', 'perm-m1_', 'perm-m6_', 'perm-m1to6-encw_')}
    expected |= {f'fcn_r18-d16_{c}-b{m}_6k_stanford-128x96.py'
                 for c in ('shf', 'np', 'ffx') for m in (4, 8, 16)}
    assert names == expected


@pytest.mark.parametrize('path', CONFIGS, ids=lambda p: p.stem)
def test_each_config_adds_only_its_protection(path):
    base, cfg = Config.fromfile(str(BASE)), Config.fromfile(str(path))
    assert _without_protection(cfg) == _without_protection(base)
    assert cfg.model.pretrained is None  # trained from scratch
    stem = path.stem
    if '-b' in stem:
        cipher = cfg.train_dataloader.dataset.pipeline[5]
        assert cfg.test_dataloader.dataset.pipeline[3] == cipher
        assert cfg.val_dataloader.dataset.pipeline[3] == cipher
        size = int(stem.split('-b')[1].split('_')[0])
        assert cipher.block_size == size and all(s % size == 0 for s in cfg.crop_size)
        assert cipher.type == {'shf': 'BlockShuffle', 'np': 'BlockNegPos',
                               'ffx': 'BlockFFX'}[stem.split('_')[2].split('-')[0]]
        assert cipher.get('mode') == ('paper' if '_ffx-' in stem else None)
        assert cipher.key == base.key  # a key file, never the key
    elif 'perm' in stem:
        protection = cfg.model.protection
        expected = {'perm-m1': POINTS[:1], 'perm-m6': POINTS[-1:],
                    'perm-m1to6-encw': POINTS}[stem.split('_')[2]]
        assert cfg.model.type == 'KeyProtectedEncoderDecoder'
        assert protection.points == expected and protection.key == base.key
        assert protection.get('encrypt_weights', False) == ('-encw_' in stem)
    else:
        assert cfg.model.type == 'EncoderDecoder' and 'protection' not in cfg.model


def test_splits_selection_on_val_report_on_test(monkeypatch):
    monkeypatch.delenv('KP_KEY_FILE', raising=False)
    cfg = Config.fromfile(str(BASE))
    prefixes = {s: cfg[f'{s}_dataloader'].dataset.data_prefix.img_path
                for s in ('train', 'val', 'test')}
    assert prefixes == {'train': 'img_dir/train', 'val': 'img_dir/val', 'test': 'img_dir/test'}
    assert cfg.default_hooks.checkpoint.save_best == 'mIoU'
    assert cfg.test_cfg == dict(type='KeyConditionTestLoop', incorrect=100, seed=0)
    assert cfg.key == dict(file='work_dirs/stanford_background/owner.key')
