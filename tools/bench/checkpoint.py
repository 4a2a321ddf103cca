"""Save and load time of a sealed FCN-R50-D8 checkpoint against the same checkpoint in clear.

Both checkpoints hold what mmengine's ``CheckpointHook`` writes that matters for the
time: the ``state_dict`` and the SGD optimizer state (a momentum buffer per parameter).
*Save* is building the checkpoint (sealing: AES-256-GCM over every tensor, the
manifest) and ``torch.save`` to a file; *load* is the safe loader, checking the
descriptor and the manifest, opening the seals and ``load_state_dict``. The variants are interleaved (plain, sealed, plain, ...).

Sealing reuses the ciphertext buffers of the previous save once that checkpoint
is gone (what every save of a run but the first does); the row *save, first of a
run* forgets them before each save, so it pays for fresh memory as a run's first
checkpoint does.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path
from typing import Any, Dict

import torch

from bench.common import interleaved_times, machine_line


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The ``checkpoint`` subcommand's options."""
    parser.add_argument('--repeats', type=int, default=5)


def _fcn_r50(protected: bool) -> 'tuple[torch.nn.Module, torch.optim.Optimizer]':
    import mmseg
    from mmengine.config import Config
    from mmseg.registry import MODELS

    from mmseg_keyprotect.keys import SecretKey
    base = Path(mmseg.__file__).parent / '.mim' / 'configs' / '_base_' / 'models' / 'fcn_r50-d8.py'
    cfg = Config.fromfile(str(base)).model
    cfg.pretrained = None
    for part in (cfg.backbone, cfg.decode_head, cfg.auxiliary_head):
        part.norm_cfg = dict(type='BN', requires_grad=True)
    cfg.data_preprocessor = dict(type='SegDataPreProcessor')
    if protected:
        os.environ['KP_BENCH_KEY'] = SecretKey.generate().export_hex()
        cfg.type = 'KeyProtectedEncoderDecoder'
        cfg.protection = dict(key=dict(env='KP_BENCH_KEY'), points=[], encrypt_weights=True)
    model = MODELS.build(cfg)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    return model, optimizer


def run(args: argparse.Namespace) -> None:
    """Sealed vs plain checkpoint save and load time (FCN-R50-D8 + SGD state)."""
    from mmengine.registry import init_default_scope
    from mmengine.runner import CheckpointLoader

    import mmseg_keyprotect  # noqa: F401  (registers the protected segmentor)
    from mmseg_keyprotect.checkpoint import (authenticate, install_safe_loaders, open_checkpoint,
                                             release_seal_buffers, seal_file, sealing,
                                             verify_file)
    from mmseg_keyprotect.protection import Protection

    init_default_scope('mmseg')
    install_safe_loaders()  # as a protected run's loads go (KeyProtectedRunner, compat)
    variants: Dict[str, Any] = {name: _fcn_r50(name == 'sealed') for name in ('plain', 'sealed')}
    folder = Path(tempfile.mkdtemp(prefix='bench_ckpt_'))

    def save(name: str) -> None:
        model, optimizer = variants[name]
        with sealing():  # as the runner's save
            checkpoint = dict(meta={'iter': 1}, state_dict=model.state_dict(),
                              optimizer=optimizer.state_dict())
        encryption = Protection.of(model).weight_encryption
        if encryption is not None:  # CheckpointSealHook, then KeyProtectedRunner's last walk
            seal_file(checkpoint, model, encryption.key, run='bench')
            seal_file(checkpoint, model, encryption.key, run='bench')
        torch.save(checkpoint, folder / f'{name}.pth')

    def load(name: str) -> None:
        model, optimizer = variants[name]
        checkpoint = CheckpointLoader.load_checkpoint(str(folder / f'{name}.pth'), 'cpu')
        encryption = Protection.of(model).weight_encryption
        if encryption is not None:  # what KeyProtectionHook does on every load
            authenticate(checkpoint, encryption.key, allow_plaintext=False)
            verify_file(checkpoint, encryption.key)
            open_checkpoint(checkpoint, encryption.key, checkpoint['meta']['key_protection'])
        model.load_state_dict(checkpoint['state_dict'])
        optimizer.load_state_dict(checkpoint['optimizer'])

    def save_first(name: str) -> None:
        release_seal_buffers()
        save(name)

    fns = {f'{step} {name}': (lambda s=step, n=name: {'save': save, 'load': load}[s](n))
           for step in ('save', 'load') for name in variants}
    fns['first plain'] = fns['save plain']
    fns['first sealed'] = lambda: save_first('sealed')
    load_before = os.getloadavg()
    times = interleaved_times(fns, args.repeats, warmup=1)
    load_after = os.getloadavg()
    size = {name: (folder / f'{name}.pth').stat().st_size / 2**20 for name in variants}
    print(f'Machine: {machine_line()}; FCN-R50-D8 + SGD momentum, '
          f'{size["plain"]:.0f} MiB plain / {size["sealed"]:.0f} MiB sealed, '
          f'median of {args.repeats} (min-max), load average (1/5/15 min) '
          f'{"/".join(f"{v:.1f}" for v in load_before)} before, '
          f'{"/".join(f"{v:.1f}" for v in load_after)} after\n')
    print('| step | plain (s) | sealed (s) | sealed / plain (min-max of rounds) |')
    print('|---|---:|---:|---:|')
    for step, label in (('save', 'save'), ('first', 'save, first of a run'), ('load', 'load')):
        plain, sealed = times[f'{step} plain'], times[f'{step} sealed']
        ratios = [b / a for a, b in zip(plain, sealed)]
        print(f'| {label} | {_spread(plain)} | {_spread(sealed)} | '
              f'{statistics.median(sealed) / statistics.median(plain):.2f} '
              f'({min(ratios):.2f}-{max(ratios):.2f}) |')
    for file in folder.iterdir():
        file.unlink()
    folder.rmdir()


def _spread(times: 'list[float]') -> str:
    return f'{statistics.median(times):.2f} ({min(times):.2f}-{max(times):.2f})'
