"""Per-image cipher time on an HxWx3 uint8 image vs a copy, one np.take and naive pyffx.

Usage:
    python tools/benchmark.py ciphers [--size 512] [--block-sizes 4 16] [--repeats 30]
"""
from __future__ import annotations

import argparse
import statistics
from typing import Callable, Dict

import numpy as np

from bench.common import interleaved_times, machine_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``ciphers`` subcommand's options."""
    parser.add_argument('--size', type=int, default=512)
    parser.add_argument('--block-sizes', type=int, nargs='+', default=[4, 16])
    parser.add_argument('--repeats', type=int, default=30)
    parser.add_argument('--naive-crop', type=int, default=32)


def run(args: argparse.Namespace) -> None:
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
