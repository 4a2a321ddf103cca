"""Benchmark: protecting a trained model after training (posthoc), seconds on this machine.

FCN-R50-D8 and ViT-B (UPerNet) from mmseg's own configs, random weights (the time
does not depend on them), no pretrained download. Times the transformation with
its exactness check: absorbed permutations at ``points='auto'``, and for ViT-B
the key-transformed patch embedding (BlockShuffle, block = patch = 16), next to one
forward pass of every head of the same model on one image (the unit the times are made of:
finding the points traces the model, the transformation records one pass, the check runs
the original and the keyed model).
"""
from __future__ import annotations

import argparse
import statistics
import time
from typing import Callable, Dict, List

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from mmseg.registry import MODELS

import mmseg_keyprotect  # noqa: F401  (registers components)
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.posthoc import absorb_permutations
from mmseg_keyprotect.posthoc.patch_embedding import transform_patch_embedding
from mmseg_keyprotect.posthoc.segmentor import forward_heads, probe_input
from mmseg_keyprotect.testing.sweep import mmseg_config_dir, shrink_config

MODELS_TIMED = {
    'FCN-R50-D8': 'fcn/fcn_r50-d8_4xb2-40k_cityscapes-512x1024.py',
    'ViT-B UPerNet': 'vit/vit_vit-b16_mln_upernet_8xb2-80k_ade20k-512x512.py',
}


def _build(config: str, size: int) -> torch.nn.Module:
    cfg = shrink_config(Config.fromfile(str(mmseg_config_dir() / config)), size)
    torch.manual_seed(0)
    return MODELS.build(cfg.model).eval()


def _forward(model: torch.nn.Module, inputs: torch.Tensor) -> object:
    with torch.no_grad():
        return forward_heads(model, inputs)


def run(args: argparse.Namespace) -> None:
    """Seconds to protect a trained FCN-R50 / ViT-B after training (transform + exactness check)."""
    init_default_scope('mmseg')
    key = SecretKey.generate()
    rows: Dict[str, Callable[[], object]] = {}
    for name, config in MODELS_TIMED.items():
        model = _build(config, args.size)
        inputs = probe_input(model, (args.size, args.size))
        rows[f'{name}: one forward pass (reference)'] = (
            lambda m=model, x=inputs: _forward(m, x))
        rows[f'{name}: permutation, points=auto'] = (
            lambda m=model: absorb_permutations(m, 'auto', key, (args.size, args.size)))
        if name.startswith('ViT'):
            rows[f'{name}: patch embedding (SHF, 16x16)'] = (
                lambda m=model: transform_patch_embedding(m, key))
    times: Dict[str, List[float]] = {name: [] for name in rows}
    for _ in range(args.repeats):
        for name, run in rows.items():
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    print(f'input {args.size}x{args.size}, {torch.get_num_threads()} torch threads, '
          f'{args.repeats} runs each, interleaved\n')
    print('| model: method | median s | min s | max s |')
    print('|---|---|---|---|')
    for name, values in times.items():
        print(f'| {name} | {statistics.median(values):.2f} | {min(values):.2f} | '
              f'{max(values):.2f} |')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('--size', type=int, default=128,
                        help='input side of the traced and checked passes')
    parser.add_argument('--repeats', type=int, default=3)
