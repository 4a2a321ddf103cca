"""Forward+backward cost of keyed channel permutation in FCN-R50-D8.

Builds mmseg's FCN-R50-D8 (BN, random init, 21 classes) three times with the
same weights: unprotected, with the paper's Model-1 point (stem output, 64
channels at 1/4 resolution) and with Model-6 (input of ``decode_head.conv_seg``,
512 channels at 1/8), from the shipped configs. One training step's forward and
backward is timed for each, interleaved round-robin, and the ratios to the
unprotected model are printed as a markdown table.

Usage:
    python tools/benchmark.py permutation [--size 256] [--batch 2] [--repeats 5]
"""
from __future__ import annotations

import argparse
import statistics
from pathlib import Path
from typing import Any, Callable, Dict, List

import torch
from torch import nn


from bench.common import interleaved_times, machine_line
from mmseg_keyprotect.protection import Protection

CONFIG_DIR = Path(__file__).resolve().parents[2] / 'configs' / 'feature_permutation'
M1, M6 = (f'fcn_r50-d8_perm-m{m}_100e_voc12-256x256.py' for m in (1, 6))
# variant -> (config, protected?); the unprotected model is Model-6's without protection.
VARIANTS = {
    'unprotected': (M6, False),
    'perm-m1 (layer1 input)': (M1, True),
    'perm-m6 (conv_seg input)': (M6, True),
}
NUM_CLASSES = 21


def cpu_model_cfg(cfg: Any) -> Any:
    """A model config with SyncBN replaced by BN and no pretrained weights."""
    if isinstance(cfg, list):
        return [cpu_model_cfg(v) for v in cfg]
    if not isinstance(cfg, dict):
        return cfg
    out = {k: cpu_model_cfg(v) for k, v in cfg.items()}
    if out.get('type') == 'SyncBN':
        out['type'] = 'BN'
    if 'pretrained' in out:
        out['pretrained'] = None
    return out


def build_variants(device: torch.device) -> Dict[str, nn.Module]:
    """The unprotected, Model-1 and Model-6 FCN-R50-D8 with identical weights."""
    import mmseg_keyprotect  # noqa: F401  (registers the components)
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from mmseg_keyprotect.keys import SecretKey

    key = SecretKey.generate()
    models: Dict[str, nn.Module] = {}
    for name, (config, protected) in VARIANTS.items():
        cfg = cpu_model_cfg(Config.fromfile(CONFIG_DIR / config).model.to_dict())
        if protected:
            cfg['protection']['key'] = key
        else:
            cfg['type'] = 'EncoderDecoder'
            cfg.pop('protection')
        models[name] = MODELS.build(cfg).to(device).train()
    reference = next(iter(models.values())).state_dict()
    for model in models.values():
        model.load_state_dict(reference, strict=True)
    return models


def train_step(model: nn.Module, inputs: torch.Tensor, samples: List[Any],
               device: torch.device) -> Callable[[], None]:
    """One forward + backward of the training loss (no optimizer step)."""

    def step() -> None:
        model.zero_grad(set_to_none=True)
        loss, _ = model.parse_losses(model(inputs, samples, mode='loss'))
        loss.backward()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    return step


def make_batch(batch: int, size: int, device: torch.device):
    """Random images and label maps."""
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample

    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(batch, 3, size, size, generator=generator).to(device)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             ori_shape=(size, size)))
        labels = torch.randint(0, NUM_CLASSES, (1, size, size), generator=generator)
        sample.gt_sem_seg = PixelData(data=labels.to(device))
        samples.append(sample)
    return inputs, samples


def permutation_op_step(model: nn.Module, inputs: torch.Tensor, samples: List[Any],
                        device: torch.device) -> Callable[[], None]:
    """Forward + backward of the model's permutations alone, on tensors of their real shapes.

    Timing the permutations in isolation bounds their share of a step much more tightly
    than the difference of two noisy step times.
    """

    perms = Protection.of(model).parts
    shapes = []
    handles = [p.register_forward_hook(lambda m, a, out: shapes.append((m, out.shape)))
               for p in perms]
    with torch.no_grad():
        model(inputs, samples, mode='loss')
    for handle in handles:
        handle.remove()
    tensors = [(m, torch.randn(shape, device=device, requires_grad=True)) for m, shape in shapes]

    def step() -> None:
        for m, x in tensors:
            m(x).sum().backward()
        if device.type == 'cuda':
            torch.cuda.synchronize(device)

    return step


def run(args: argparse.Namespace) -> None:
    """Forward+backward time of FCN-R50-D8 with and without the Model-1/Model-6 permutation.

    Args:
        args: ``size`` (input side), ``batch``, ``repeats``; optionally
            ``warmup`` (rounds not timed, default 2) and ``device`` (default:
            cuda if available, else cpu).
    """
    device = torch.device(getattr(args, 'device', None)
                          or ('cuda' if torch.cuda.is_available() else 'cpu'))
    models = build_variants(device)
    inputs, samples = make_batch(args.batch, args.size, device)
    steps = {name: train_step(model, inputs, samples, device) for name, model in models.items()}
    ops = {name: permutation_op_step(model, inputs, samples, device)
           for name, model in models.items() if name != 'unprotected'}
    times = interleaved_times(steps, args.repeats, warmup=getattr(args, 'warmup', 2))
    op_times = interleaved_times(ops, 20 * args.repeats)
    base_median = statistics.median(times['unprotected'])
    base_min = min(times['unprotected'])

    print(f'## permutation: FCN-R50-D8 forward+backward, batch {args.batch} at '
          f'{args.size}x{args.size} on {device.type}, {args.repeats} interleaved rounds\n')
    print(f'Machine: {machine_line()}\n')
    print('| variant | median ms / step | ratio (median) | ratio (min) | permutation alone, '
          'ms (fwd+bwd) | 1 + permutation / unprotected step |')
    print('|---|---:|---:|---:|---:|---:|')
    for name, t in times.items():
        median = statistics.median(t)
        op = statistics.median(op_times[name]) if name in op_times else 0.0
        print(f'| {name} | {1e3 * median:.1f} | {median / base_median:.3f} | '
              f'{min(t) / base_min:.3f} | {1e3 * op:.3f} | {1 + op / base_median:.5f} |')


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``permutation`` subcommand's options."""
    parser.add_argument('--size', type=int, default=256)
    parser.add_argument('--batch', type=int, default=2)
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--warmup', type=int, default=2)
    parser.add_argument('--device', default=None, help='cpu, cuda, cuda:1 ... (default: auto)')
