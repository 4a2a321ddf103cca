"""mmseg's own tools (from its wheel, ``mmseg/.mim/tools``) train and test auto-protected families.

The configs are what a user writes: mmseg's family config by inheritance, the plugin in
``custom_imports``, ``points='auto'`` with encrypted weights; the rest only points the
dataloaders at a tiny generated dataset and makes the run short and CPU-sized.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.testing.sweep import FAMILIES, mmseg_config_dir

TOOLS = mmseg_config_dir().parent / 'tools'

CONFIG = """_base_ = ['mmseg::{family}/{config}']
custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)
model = dict(type='KeyProtectedEncoderDecoder', protection=dict(
    key=dict(file={key!r}), points='auto', encrypt_weights=True))
custom_hooks = [dict(type='KeyProtectionHook'), dict(type='CheckpointSealHook')]

# --- CPU-sized run on the generated dataset (not part of the protection) ---
model.update(pretrained=None, data_preprocessor=dict(size=(64, 64)), test_cfg=dict(mode='whole'),
             backbone=dict(init_cfg=None))
data = dict(type='SyntheticVOCDataset', data_root={data!r})
pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
            dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, persistent_workers=False, dataset=dict(
    _delete_=True, ann_file='ImageSets/Segmentation/train.txt', pipeline=pipeline, **data))
val_dataloader = dict(batch_size=1, num_workers=0, persistent_workers=False, dataset=dict(
    _delete_=True, ann_file='ImageSets/Segmentation/val.txt', pipeline=pipeline, **data))
test_dataloader = val_dataloader
val_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
test_evaluator = val_evaluator
train_cfg = dict(type='IterBasedTrainLoop', max_iters=2, val_interval=2)
test_cfg = dict(type='KeyConditionTestLoop', incorrect=2, seed=0)
default_hooks = dict(checkpoint=dict(interval=2), logger=dict(interval=1))
"""


def _run(*args) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, *map(str, args)], env=env, capture_output=True,
                          text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


# a small net with no config in this project (CI) and token features (slow)
@pytest.mark.parametrize('family', ['cgnet', pytest.param('segformer', marks=pytest.mark.slow)])
def test_mmseg_train_and_test_tools(tmp_path, synthetic_voc, family):
    key_file = SecretKey.generate().save(tmp_path / 'owner.key')
    config = tmp_path / f'{family}_auto.py'
    config.write_text(CONFIG.format(family=family, config=FAMILIES[family]['config'],
                                    key=str(key_file), data=str(synthetic_voc)))
    train_dir, test_dir = tmp_path / 'train', tmp_path / 'test'
    proc = _run(TOOLS / 'train.py', config, '--work-dir', train_dir)
    assert "points='auto' resolved to" in proc.stdout + proc.stderr
    assert (train_dir / 'iter_2.pth').is_file()

    _run(TOOLS / 'test.py', config, train_dir / 'iter_2.pth', '--work-dir', test_dir)
    report = json.loads((test_dir / 'key_conditions.json').read_text())
    assert set(report['summary']) == {'correct', 'plain', 'incorrect'}
    assert report['summary']['incorrect']['num_keys'] == 2
    # the checkpoint descriptor (compared with the config's when test.py loads it)
    kinds = [e['type'] for e in report['protection']]
    assert kinds.count('WeightEncryption') == 1 and kinds.count('PointPermutation') >= 2
