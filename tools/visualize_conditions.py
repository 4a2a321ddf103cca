"""Draw a protected model's predictions under each key condition (like Fig. 6 of paper 2).

A thin command line over :func:`mmseg_keyprotect.visualization.draw_conditions`.

Usage:
    python tools/visualize_conditions.py CONFIG [CHECKPOINT] --out fig.png [--num-samples 4]
"""
from __future__ import annotations

import argparse
from pathlib import Path

import matplotlib

matplotlib.use('Agg')
from mmengine.config import DictAction  # noqa: E402

from mmseg_keyprotect.apis import load_config  # noqa: E402
from mmseg_keyprotect.visualization import draw_conditions  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (omit for untrained weights)')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--num-samples', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0, help='seed of the incorrect key')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in mmseg tools')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = load_config(args.config, args.cfg_options)
    out = draw_conditions(cfg, args.checkpoint, Path(args.out), args.num_samples, args.seed)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
