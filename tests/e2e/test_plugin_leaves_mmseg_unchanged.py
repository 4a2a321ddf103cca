"""An unprotected mmseg config trains and tests bit-identically with and without the plugin.

The config is plain mmseg (mmseg's FCN base model, ``BaseSegDataset`` over the generated
data, mmengine's loops and runner); the only difference between the two runs is
``custom_imports=['mmseg_keyprotect']``. Each run is a fresh interpreter with one thread.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

from mmseg_keyprotect.datasets.synthetic import CLASSES, PALETTE

RUN = textwrap.dedent('''
    import hashlib, json, sys
    import torch
    from mmengine.config import Config
    from mmengine.runner import Runner
    torch.set_num_threads(1)
    cfg = Config.fromfile(sys.argv[1])
    cfg.work_dir = sys.argv[2]
    runner = Runner.from_cfg(cfg)
    runner.train()
    metrics = runner.test()
    digest = hashlib.sha256()
    for name, tensor in sorted(runner.model.state_dict().items()):
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().numpy().tobytes())
    print(json.dumps(dict(weights=digest.hexdigest(),
                          metrics={k: float(v) for k, v in metrics.items()},
                          plugin='mmseg_keyprotect' in sys.modules,
                          loops=[type(runner.train_loop).__name__,
                                 type(runner.test_loop).__name__])))
''')


def write_config(path: Path, data_root: Path, plugin: bool) -> Path:
    dataset = dict(type='BaseSegDataset', data_root=str(data_root),
                   data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
                   img_suffix='.jpg', seg_map_suffix='.png', reduce_zero_label=False,
                   metainfo=dict(classes=list(CLASSES), palette=[list(c) for c in PALETTE]))
    text = f'''
_base_ = ['mmseg::_base_/models/fcn_r50-d8.py', 'mmseg::_base_/default_runtime.py']
{"custom_imports = dict(imports=['mmseg_keyprotect'], allow_failed_imports=False)" if plugin else ""}
norm_cfg = dict(type='BN', requires_grad=True)
model = dict(
    data_preprocessor=dict(size=(64, 64)), pretrained=None,
    backbone=dict(depth=18, stem_channels=16, base_channels=16, norm_cfg=norm_cfg),
    decode_head=dict(in_channels=128, channels=16, num_classes=6, norm_cfg=norm_cfg),
    auxiliary_head=dict(in_channels=64, channels=16, num_classes=6, norm_cfg=norm_cfg))
dataset = {dataset!r}
train_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                  dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs')]
test_pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                 dict(type='PackSegInputs')]
train_dataloader = dict(batch_size=2, num_workers=0, sampler=dict(type='InfiniteSampler'),
                        dataset=dict(dataset, ann_file='ImageSets/Segmentation/train.txt',
                                     pipeline=train_pipeline))
test_dataloader = dict(batch_size=1, num_workers=0,
                       sampler=dict(type='DefaultSampler', shuffle=False),
                       dataset=dict(dataset, ann_file='ImageSets/Segmentation/val.txt',
                                    pipeline=test_pipeline))
test_evaluator = dict(type='IoUMetric', iou_metrics=['mIoU'])
optim_wrapper = dict(type='OptimWrapper', optimizer=dict(type='SGD', lr=0.01, momentum=0.9))
train_cfg = dict(type='IterBasedTrainLoop', max_iters=3)
test_cfg = dict(type='TestLoop')
default_hooks = dict(checkpoint=dict(type='CheckpointHook', by_epoch=False, interval=3),
                     logger=dict(type='LoggerHook', interval=1))
env_cfg = dict(cudnn_benchmark=False)
randomness = dict(seed=0, deterministic=True)
'''
    path.write_text(text)
    return path


def run(config: Path, work_dir: Path) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS='1', PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, '-c', RUN, str(config), str(work_dir)],
                          capture_output=True, text=True, timeout=600, env=env,
                          cwd=config.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_unprotected_config_is_bit_identical_with_the_plugin_imported(tmp_path, synthetic_voc):
    without = run(write_config(tmp_path / 'without.py', synthetic_voc, plugin=False),
                  tmp_path / 'without')
    with_plugin = run(write_config(tmp_path / 'with.py', synthetic_voc, plugin=True),
                      tmp_path / 'with')
    assert not without['plugin'] and with_plugin['plugin']
    assert with_plugin['loops'] == without['loops'] == ['IterBasedTrainLoop', 'TestLoop']
    assert with_plugin['weights'] == without['weights']
    assert with_plugin['metrics'] == without['metrics']
    assert 'mIoU' in without['metrics']
    # the checkpoints hold the same weights too (neither run sealed or rewrote them)
    from mmengine.runner import CheckpointLoader
    a, b = (CheckpointLoader.load_checkpoint(str(tmp_path / d / 'iter_3.pth'), 'cpu')
            for d in ('without', 'with'))
    assert a['state_dict'].keys() == b['state_dict'].keys()
    assert all((a['state_dict'][k] == b['state_dict'][k]).all() for k in a['state_dict'])
    assert 'key_protection' not in b['meta']
