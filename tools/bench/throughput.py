"""Throughput of protected training: batched torch ciphers and training iterations/s.

Four tables, every one from one run with its variants interleaved round-robin:

1. ``ciphers``: one batch of N HxWx3 uint8 images encrypted by the numpy
   pipeline transforms (one call per image, as the dataloader does), by the
   batched torch cipher of ``BlockCipherSegDataPreProcessor`` (one call per
   batch, on ``--device``), and a plain copy of the batch.
2. ``training``: iterations/s of the demo FCN (synthetic data, dataloader in the
   main process so every CPU cost of the data path is counted) unprotected, with
   the block cipher in the pipeline, with the same cipher in the data
   preprocessor, and with the Model-6 permutation; same initial weights. The
   isolated cost of the preprocessor cipher bounds its share of a step.
3. ``scaling``: the batched cipher's time against image size, block size and
   batch size.
4. ``share`` (``--share``; meant for a GPU): the preprocessor cipher's share of
   an FCN-R50-D8 training step (forward + backward) at ``--share-batch`` x
   ``--share-size``.

Usage:
    python tools/benchmark.py throughput [--device cpu] [--rounds 5] [--share]
"""
from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path
from typing import Any, Callable, Dict, List

import numpy as np
import torch


from bench.common import interleaved_times, machine_line
from mmseg_keyprotect.protection import Protection

REPO = Path(__file__).resolve().parents[2]
DEMO = REPO / 'configs' / 'demo'
CIPHERS = ('BlockShuffle', 'BlockNegPos', 'BlockFFX')
TRAIN_VARIANTS = {
    'unprotected': 'fcn_r18-d8_baseline_demo.py',
    'SHF M=2 in pipeline': 'fcn_r18-d8_shf-b2_demo.py',
    'SHF M=2 in preprocessor': 'fcn_r18-d8_shf-b2-preproc_demo.py',
    'perm-m6 (Model-6)': 'fcn_r18-d8_perm-m6_demo.py',
}


def _sync(device: torch.device) -> None:
    if device.type == 'cuda':
        torch.cuda.synchronize(device)


def _batched(name: str, block_size: int, key: Any):
    from mmseg.registry import TRANSFORMS

    from mmseg_keyprotect.models import BatchedBlockCipher
    transform = TRANSFORMS.build(dict(type=name, block_size=block_size, key=key))
    return transform, BatchedBlockCipher(transform)


def _images(n: int, size: int) -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (n, size, size, 3), dtype=np.uint8)


def table_ciphers(args: argparse.Namespace, key: Any, device: torch.device) -> None:
    """Numpy per-image transforms vs the batched torch cipher vs a plain copy, one batch."""
    imgs = _images(args.batch, args.size)
    x = torch.from_numpy(np.ascontiguousarray(imgs.transpose(0, 3, 1, 2))).to(device)

    def copy() -> None:
        x.clone()
        _sync(device)

    fns: Dict[str, Callable[[], object]] = {'plain copy (torch clone)': copy}
    for name in CIPHERS:
        transform, batched = _batched(name, args.block_size, key)
        fns[f'{name} numpy, per image'] = (
            lambda t=transform: [t(dict(img=img))['img'] for img in imgs])

        def torch_batch(b=batched) -> None:
            b.encrypt(x, key)
            _sync(device)

        fns[f'{name} torch, batched'] = torch_batch
    med = {k: statistics.median(v) for k, v in interleaved_times(fns, args.repeats).items()}
    copy_t = med['plain copy (torch clone)']
    print(f'### ciphers: batch of {args.batch} x {args.size}x{args.size}x3 uint8, M='
          f'{args.block_size}, torch on {device.type}, median of {args.repeats} interleaved '
          'runs\n')
    print('| cipher | numpy per image, ms / batch | torch batched, ms / batch | '
          'numpy / torch | torch / plain copy |')
    print('|---|---:|---:|---:|---:|')
    for name in CIPHERS:
        a, b = med[f'{name} numpy, per image'], med[f'{name} torch, batched']
        print(f'| {name} | {1e3 * a:.2f} | {1e3 * b:.2f} | {a / b:.1f} | {b / copy_t:.2f} |')
    print(f'| plain copy (torch clone) | | {1e3 * copy_t:.2f} | | 1.00 |\n')


def _train_cfg(name: str, config: str, key_file: str, data_root: str, size: int, batch: int,
               device: torch.device) -> Any:
    from mmengine.config import Config
    cfg = Config.fromfile(str(DEMO / config))

    def fix(node: Any) -> None:
        if isinstance(node, dict):
            if isinstance(node.get('key'), dict):
                node['key'] = dict(file=key_file)
            if node.get('type') == 'RandomResize':
                node['scale'] = (size, size)
            if node.get('type') == 'RandomCrop':
                node['crop_size'] = (size, size)
            for value in node.values():
                fix(value)
        elif isinstance(node, list):
            for value in node:
                fix(value)

    fix(cfg._cfg_dict)
    cfg.model.data_preprocessor.size = (size, size)
    loader = cfg.train_dataloader
    loader.update(batch_size=batch, num_workers=0, persistent_workers=False)
    loader.dataset.data_root = data_root
    return cfg


def table_training(args: argparse.Namespace, key_file: str, data_root: str,
                   device: torch.device) -> None:
    """Training iterations/s: unprotected vs cipher in pipeline / preprocessor vs Model-6."""
    from mmengine.optim import OptimWrapper
    from mmengine.runner import Runner
    from mmseg.registry import MODELS


    steps: Dict[str, Callable[[], None]] = {}
    reference = None
    preproc_cipher = None
    for name, config in TRAIN_VARIANTS.items():
        cfg = _train_cfg(name, config, key_file, data_root, args.train_size, args.train_batch,
                         device)
        torch.manual_seed(0)
        model = MODELS.build(cfg.model).to(device).train()
        if reference is None:
            reference = model.state_dict()
        model.load_state_dict(reference)
        optim = OptimWrapper(torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9))
        data = iter(Runner.build_dataloader(cfg.train_dataloader, seed=0))
        if 'preprocessor' in name:
            preproc_cipher = Protection.of(model).parts[0]

        def step(model=model, optim=optim, data=data) -> None:
            for _ in range(args.iters):
                model.train_step(next(data), optim)
            _sync(device)

        steps[name] = step
    times = interleaved_times(steps, args.rounds, warmup=1)
    its = {k: [args.iters / t for t in v] for k, v in times.items()}
    base = statistics.median(its['unprotected'])
    # The preprocessor cipher alone on a batch of the same shape.
    x = torch.from_numpy(np.ascontiguousarray(
        _images(args.train_batch, args.train_size).transpose(0, 3, 1, 2))).to(device)

    def cipher_alone() -> None:
        preproc_cipher.batched.encrypt(x, preproc_cipher.correct_key)
        _sync(device)

    alone = statistics.median(interleaved_times({'c': cipher_alone}, 50)['c'])
    step_time = 1 / base
    print(f'### training: demo FCN-R18-D8, batch {args.train_batch} at {args.train_size}x'
          f'{args.train_size}, dataloader in the main process, {args.rounds} interleaved '
          f'rounds of {args.iters} iterations on {device.type}\n')
    print('| variant | iterations/s (median) | ratio to unprotected (median) | '
          'ratio (per-round, min..max) |')
    print('|---|---:|---:|---:|')
    for name, values in its.items():
        per_round = [v / u for v, u in zip(values, its['unprotected'])]
        print(f'| {name} | {statistics.median(values):.3f} | '
              f'{statistics.median(values) / base:.3f} | '
              f'{min(per_round):.3f}..{max(per_round):.3f} |')
    print(f'\nPreprocessor cipher alone: {1e3 * alone:.3f} ms / batch = '
          f'{100 * alone / step_time:.3f}% of an unprotected step '
          f'({1e3 * step_time:.1f} ms): bound on its ratio 1 / (1 + share) = '
          f'{1 / (1 + alone / step_time):.4f}\n')


def table_scaling(args: argparse.Namespace, key: Any, device: torch.device) -> None:
    """Batched torch cipher time against image size, block size and batch size."""
    rows = ([(s, 4, 8) for s in (64, 128, 256, 512)] + [(256, m, 8) for m in (2, 16, 64)]
            + [(256, 4, n) for n in (1, 32)])
    print(f'### scaling: batched torch cipher on {device.type}, median of {args.repeats} '
          'interleaved runs (ns per pixel = per HxW position, 3 channels)\n')
    print('| image | M | batch | ' + ' | '.join(f'{c} ms (ns/px)' for c in CIPHERS)
          + ' | copy ms (ns/px) |')
    print('|---|---:|---:|' + '---:|' * (len(CIPHERS) + 1))
    for size, m, n in rows:
        x = torch.from_numpy(np.ascontiguousarray(
            _images(n, size).transpose(0, 3, 1, 2))).to(device)
        fns: Dict[str, Callable[[], object]] = {}
        for name in CIPHERS:
            _, batched = _batched(name, m, key)

            def run(b=batched) -> None:
                b.encrypt(x, key)
                _sync(device)

            fns[name] = run

        def copy() -> None:
            x.clone()
            _sync(device)

        fns['copy'] = copy
        med = {k: statistics.median(v) for k, v in interleaved_times(fns, args.repeats).items()}
        pixels = n * size * size
        cells = [f'{1e3 * med[k]:.2f} ({1e9 * med[k] / pixels:.1f})' for k in (*CIPHERS, 'copy')]
        print(f'| {size}x{size} | {m} | {n} | ' + ' | '.join(cells) + ' |')
    print()


def table_share(args: argparse.Namespace, key: Any, device: torch.device) -> None:
    """The preprocessor cipher's share of an FCN-R50-D8 training step."""
    from bench.permutation import build_variants, make_batch, train_step

    model = build_variants(device)['unprotected']
    inputs, samples = make_batch(args.share_batch, args.share_size, device)
    x = torch.from_numpy(np.ascontiguousarray(
        _images(args.share_batch, args.share_size).transpose(0, 3, 1, 2))).to(device)
    fns: Dict[str, Callable[[], object]] = {
        'step': train_step(model, inputs, samples, device)}
    for name in CIPHERS:
        _, batched = _batched(name, args.block_size, key)

        def run(b=batched) -> None:
            b.encrypt(x, key)
            _sync(device)

        fns[name] = run
    med = {k: statistics.median(v)
           for k, v in interleaved_times(fns, args.share_repeats, warmup=1).items()}
    print(f'### share: FCN-R50-D8 forward+backward, batch {args.share_batch} at '
          f'{args.share_size}x{args.share_size} on {device.type}: '
          f'{1e3 * med["step"]:.1f} ms / step\n')
    print('| cipher (M=%d) | ms / batch | share of a step |' % args.block_size)
    print('|---|---:|---:|')
    for name in CIPHERS:
        print(f'| {name} | {1e3 * med[name]:.3f} | {100 * med[name] / med["step"]:.3f}% |')
    print()


def run(args: argparse.Namespace) -> None:
    """Run the throughput tables (see the module docstring)."""
    import mmseg_keyprotect  # noqa: F401  (registers the components)
    from mmengine.registry import init_default_scope

    from mmseg_keyprotect.datasets import make_synthetic_voc
    from mmseg_keyprotect.keys import SecretKey

    init_default_scope('mmseg')
    torch.set_num_threads(args.threads)
    device = torch.device(args.device or ('cuda' if torch.cuda.is_available() else 'cpu'))
    key = SecretKey.generate()
    tmp = Path(tempfile.mkdtemp(prefix='kp_throughput_'))
    key_file = str(key.save(tmp / 'owner.key'))
    print(f'## throughput\n\nMachine: {machine_line()}, device {device}\n')
    parts: List[str] = args.parts
    if 'ciphers' in parts:
        table_ciphers(args, key, device)
    if 'training' in parts:
        data_root = str(make_synthetic_voc(tmp / 'voc', num_train=4 * args.train_batch,
                                           num_val=1,
                                           image_size=(args.train_size, args.train_size)))
        table_training(args, key_file, data_root, device)
    if 'scaling' in parts:
        table_scaling(args, key, device)
    if args.share:
        table_share(args, key, device)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``throughput`` subcommand's options."""
    parser.add_argument('--device', default=None, help='cpu, cuda ... (default: auto)')
    parser.add_argument('--threads', type=int, default=1,
                        help='torch CPU threads (default 1: numpy is single-threaded too, and '
                             'a shared CPU makes intra-op threads wait on each other)')
    parser.add_argument('--parts', nargs='+', default=['ciphers', 'training', 'scaling'],
                        choices=['ciphers', 'training', 'scaling'])
    parser.add_argument('--size', type=int, default=256, help='cipher table: image side')
    parser.add_argument('--batch', type=int, default=32, help='cipher table: batch size')
    parser.add_argument('--block-size', type=int, default=4)
    parser.add_argument('--repeats', type=int, default=10)
    parser.add_argument('--train-size', type=int, default=128)
    parser.add_argument('--train-batch', type=int, default=8)
    parser.add_argument('--iters', type=int, default=3, help='training iterations per round')
    parser.add_argument('--rounds', type=int, default=5)
    parser.add_argument('--share', action='store_true',
                        help='also time the cipher share of an FCN-R50-D8 step')
    parser.add_argument('--share-batch', type=int, default=32)
    parser.add_argument('--share-size', type=int, default=256)
    parser.add_argument('--share-repeats', type=int, default=5)

