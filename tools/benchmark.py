"""Benchmarks for mmseg-keyprotect, reported as ratios measured in one run.

Usage:
    python tools/benchmark.py ciphers [--size 512] [--repeats 30]
    python tools/benchmark.py conditions [--size 128] [--images 16] [--incorrect 100]
    python tools/benchmark.py permutation [--size 256] [--batch 2] [--repeats 5]
    python tools/benchmark.py throughput [--device cpu] [--rounds 5] [--share]
    python tools/benchmark.py checkpoint [--repeats 5]
    python tools/benchmark.py posthoc [--size 128] [--repeats 3]

Each subcommand interleaves the variants it compares (A, B, C, A, B, C, ...)
so that machine noise hits all of them alike, and prints a markdown table to
paste into ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import platform
import statistics
import time
import warnings
from pathlib import Path
from typing import Callable, Dict, List

import numpy as np
from mmseg_keyprotect.protection import Protection



def interleaved_times(fns: Dict[str, Callable[[], object]], repeats: int,
                      warmup: int = 2) -> Dict[str, List[float]]:
    """Time every function ``repeats`` times, round-robin, after ``warmup`` rounds."""
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def machine_line() -> str:
    import torch
    return (f'{platform.processor() or platform.machine()}, Python {platform.python_version()}, '
            f'numpy {np.__version__}, torch {torch.__version__}, '
            f'{torch.get_num_threads()} torch threads')


def bench_ciphers(args: argparse.Namespace) -> None:
    """Per-image cipher time on an HxWx3 uint8 image vs a copy, one np.take and naive pyffx."""
    import pyffx

    from mmseg_keyprotect.keys import SecretKey
    from mmseg_keyprotect.transforms import BlockFFX, BlockNegPos, BlockShuffle

    key = SecretKey.generate()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 256, (args.size, args.size, 3), dtype=np.uint8)
    index = rng.permutation(img.size).astype(np.int32)
    fns: Dict[str, Callable[[], object]] = {
        'plain copy': img.copy,
        'single np.take': lambda: np.take(img.reshape(-1), index),
    }
    for m in args.block_sizes:
        for cls in (BlockShuffle, BlockNegPos, BlockFFX):
            cipher = cls(block_size=m, key=key)
            fns[f'{cls.__name__} M={m}'] = (lambda c=cipher: c(dict(img=img))['img'])

    # Naive FFX: one pyffx call per selected value, on a crop, extrapolated per image.
    crop = img[:args.naive_crop, :args.naive_crop]
    mask = key.mask('naive', crop.size)
    ffx = pyffx.Integer(b'naive-password', length=3)

    def naive_ffx() -> np.ndarray:
        flat = crop.reshape(-1)
        out = np.array([ffx.encrypt(int(v)) if s else int(v) for v, s in zip(flat, mask)],
                       dtype=np.float32)
        return out / 999.0 * 255.0

    times = interleaved_times(fns, args.repeats)
    naive = interleaved_times({'naive': naive_ffx}, max(2, args.repeats // 10), warmup=0)
    naive_per_image = statistics.median(naive['naive']) * img.size / crop.size
    med = {name: statistics.median(t) for name, t in times.items()}

    print(f'## ciphers: {args.size}x{args.size}x3 uint8, median of {args.repeats} '
          f'interleaved runs\n')
    print(f'Machine: {machine_line()}\n')
    print('| variant | ms / image | x plain copy | x single np.take | naive pyffx / this |')
    print('|---|---:|---:|---:|---:|')
    for name, t in med.items():
        print(f'| {name} | {1e3 * t:.3f} | {t / med["plain copy"]:.2f} | '
              f'{t / med["single np.take"]:.2f} | {naive_per_image / t:,.0f} |')
    print(f'| naive per-pixel pyffx ({args.naive_crop}x{args.naive_crop} crop, extrapolated) '
          f'| {1e3 * naive_per_image:,.0f} | {naive_per_image / med["plain copy"]:,.0f} | '
          f'{naive_per_image / med["single np.take"]:,.0f} | 1 |')


def _conditions_cfg(data_root: str, work_dir: str, protection: str, loop: Dict, size: int):
    """FCN-R50-D8 (BN, random init) on the synthetic dataset at ``size``, with one protection."""
    from mmengine.config import Config
    cfg = Config.fromfile(str(Path(__file__).resolve().parents[1] / 'configs' / 'demo' /
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


def bench_conditions(args: argparse.Namespace) -> None:
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


def bench_permutation(args: argparse.Namespace) -> None:
    """Forward+backward time of FCN-R50-D8 with and without channel permutations."""
    from bench_permutation import bench_permutation as run
    run(args)


def bench_throughput(args: argparse.Namespace) -> None:
    """Batched torch ciphers vs numpy per image, and training iterations/s protected vs not."""
    from bench_throughput import bench_throughput as run
    run(args)


def bench_checkpoint(args: argparse.Namespace) -> None:
    """Sealed vs plain FCN-R50-D8 checkpoint (weights + SGD state): save and load time."""
    from bench_checkpoint import bench_checkpoint as run
    run(args)


def bench_posthoc(args: argparse.Namespace) -> None:
    """Seconds to protect a trained FCN-R50 / ViT-B after training (tools/protect.py's transform)."""
    from bench_posthoc import bench_posthoc as run
    run(args)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    ciphers = sub.add_parser('ciphers', help=bench_ciphers.__doc__)
    ciphers.add_argument('--size', type=int, default=512)
    ciphers.add_argument('--block-sizes', type=int, nargs='+', default=[4, 16])
    ciphers.add_argument('--repeats', type=int, default=30)
    ciphers.add_argument('--naive-crop', type=int, default=32)
    ciphers.set_defaults(func=bench_ciphers)
    cond = sub.add_parser('conditions', help=bench_conditions.__doc__)
    cond.add_argument('--size', type=int, default=128)
    cond.add_argument('--images', type=int, default=16)
    cond.add_argument('--incorrect', type=int, default=100)
    cond.add_argument('--repeats', type=int, default=3)
    cond.add_argument('--protections', nargs='+', default=['perm-m6', 'shf', 'ffx'],
                      choices=['perm-m6', 'shf', 'np', 'ffx'])
    cond.set_defaults(func=bench_conditions)
    perm = sub.add_parser('permutation', help=bench_permutation.__doc__)
    perm.add_argument('--size', type=int, default=256)
    perm.add_argument('--batch', type=int, default=2)
    perm.add_argument('--repeats', type=int, default=5)
    perm.set_defaults(func=bench_permutation)
    from bench_throughput import add_arguments
    throughput = sub.add_parser('throughput', help=bench_throughput.__doc__)
    add_arguments(throughput)
    throughput.set_defaults(func=bench_throughput)
    checkpoint = sub.add_parser('checkpoint', help=bench_checkpoint.__doc__)
    checkpoint.add_argument('--repeats', type=int, default=5)
    checkpoint.set_defaults(func=bench_checkpoint)
    from bench_posthoc import add_arguments as posthoc_arguments
    posthoc = sub.add_parser('posthoc', help=bench_posthoc.__doc__)
    posthoc_arguments(posthoc)
    posthoc.set_defaults(func=bench_posthoc)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        args.func(args)


if __name__ == '__main__':
    main()
