"""Correct + plain + N incorrect keys vs one plain evaluation pass, same data and model.

Usage:
    python tools/benchmark.py conditions [--size 128] [--images 16] [--incorrect 100]
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Dict

from bench.common import interleaved_times, machine_line
from mmseg_keyprotect.protection import Protection


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``conditions`` subcommand's options."""
    parser.add_argument('--size', type=int, default=128)
    parser.add_argument('--images', type=int, default=16)
    parser.add_argument('--incorrect', type=int, default=100)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--protections', nargs='+', default=['perm-m6', 'shf', 'ffx'],
                        choices=['perm-m6', 'shf', 'np', 'ffx'])


def _conditions_cfg(data_root: str, work_dir: str, protection: str, loop: Dict, size: int):
    """FCN-R50-D8 (BN, random init) on the synthetic dataset at ``size``, with one protection."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[2] / 'configs' / 'demo' /
                              'fcn_r18-d8_baseline_demo.py'))
    cfg.model.backbone.update(depth=50, stem_channels=64, base_channels=64)
    cfg.model.decode_head.update(in_channels=2048, channels=512)
    cfg.model.auxiliary_head.update(in_channels=1024, channels=256)
    cfg.work_dir = work_dir
    cfg.experiment_name = f'bench_{protection}_{loop["type"]}'
    cfg.default_hooks.logger.interval = 10**6
    cfg.test_dataloader.dataset.data_root = data_root
    resize = cfg.test_dataloader.dataset.pipeline[1]
    assert resize.type == 'Resize'
    resize.scale = (size, size)  # the model runs at the images' own size
    cfg.test_dataloader.num_workers = 0
    cfg.test_dataloader.persistent_workers = False
    cfg.test_cfg = loop
    if protection == 'perm-m6':
        cfg.model.type = 'KeyProtectedEncoderDecoder'
        cfg.model.protection = dict(key=dict(seed=1, published=True),
                                    points=['decode_head.conv_seg:input'])
    else:
        cipher = dict(shf='BlockShuffle', np='BlockNegPos', ffx='BlockFFX')[protection]
        pipeline = cfg.test_dataloader.dataset.pipeline
        pipeline.insert(len(pipeline) - 1, dict(type=cipher, block_size=4, key=dict(seed=1, published=True)))
    return cfg


def run(args: argparse.Namespace) -> None:
    """Correct + plain + N incorrect keys vs one plain evaluation pass, same data and model."""
    import tempfile

    from mmengine.logging import MMLogger
    from mmengine.runner import Runner

    from mmseg_keyprotect.datasets import make_synthetic_voc

    tmp = tempfile.mkdtemp(prefix='kp_bench_')
    data_root = str(make_synthetic_voc(Path(tmp) / 'voc', num_train=1, num_val=args.images,
                                       image_size=(args.size, args.size)))
    print(f'## conditions: FCN-R50-D8, {args.images} images at {args.size}x{args.size}, '
          f'correct + plain + {args.incorrect} incorrect keys, median of {args.repeats} '
          'interleaved runs\n')
    print(f'Machine: {machine_line()}\n')
    print('| protection | one plain pass (s) | all conditions (s) | ratio |')
    print('|---|---:|---:|---:|')
    for protection in args.protections:
        loops = {
            'plain pass': dict(type='TestLoop'),
            'conditions': dict(type='KeyConditionTestLoop', incorrect=args.incorrect),
        }
        runners = {}
        for name, loop in loops.items():
            cfg = _conditions_cfg(data_root, f'{tmp}/{protection}', protection, loop, args.size)
            runners[name] = Runner.from_cfg(cfg)
            MMLogger.get_current_instance().setLevel('WARNING')
        # The plain pass runs the model with protection off: what an unprotected model costs.
        plain = runners['plain pass']

        def plain_pass() -> None:
            with Protection.of(plain.model, plain.test_dataloader).applied('plain'):
                plain.test()

        times = interleaved_times({'plain pass': plain_pass,
                                   'conditions': runners['conditions'].test},
                                  args.repeats, warmup=1)
        a, b = (statistics.median(times[k]) for k in ('plain pass', 'conditions'))
        print(f'| {protection} | {a:.2f} | {b:.2f} | {b / a:.2f} |')
