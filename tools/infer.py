"""Segment images with a protected model under the correct key, plain, or an incorrect key.

Writes, for every image, ``OUT/pred/NAME.png`` (the label map as a palette PNG with the
dataset's palette) and ``OUT/vis/NAME.png`` (the prediction drawn over the image by mmseg's
``SegLocalVisualizer``). The key comes from ``--key FILE`` or ``--key-env NAME`` (which
replace every key source of the config) or from the config itself; with the correct key,
its fingerprint is compared with the one recorded in the checkpoint first. ``plain`` and
``incorrect`` need no key at all.

A thin command line over :func:`mmseg_keyprotect.apis.protected_inferencer` and
:mod:`mmseg_keyprotect.inference`.

Usage:
    python tools/infer.py IMAGES... --config CONFIG --checkpoint CKPT --out DIR
        [--key FILE | --key-env NAME] [--condition correct|plain|incorrect] [--seed 0]
"""
from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

from mmengine.config import DictAction

from mmseg_keyprotect.apis import CONDITIONS, KeySetupError, protected_inferencer
from mmseg_keyprotect.inference import ImageSpecError, expand_images, segment_images
from mmseg_keyprotect.protection import KeyMismatchError

#: Errors reported in one line (exit status 1), never as a traceback.
USER_ERRORS = (KeySetupError, KeyMismatchError, ImageSpecError, FileNotFoundError,
               PermissionError)


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('images', nargs='+', metavar='IMAGES',
                        help='image files, directories or globs')
    parser.add_argument('--config', required=True)
    parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--out', required=True, help='output directory (pred/ and vis/)')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--key', metavar='FILE', help='key file (replaces the config keys)')
    source.add_argument('--key-env', metavar='NAME',
                        help='environment variable holding the key (64 hex digits)')
    parser.add_argument('--condition', choices=CONDITIONS, default='correct',
                        help='plain and incorrect need no key')
    parser.add_argument('--seed', type=int, default=0, help='seed of the incorrect key')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--opacity', type=float, default=0.5, help='overlay opacity')
    parser.add_argument('--with-labels', action='store_true',
                        help='write class names on the overlays')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in mmseg tools')
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> List[Path]:
    images = expand_images(args.images)
    key = args.key if args.key is not None else \
        (dict(env=args.key_env) if args.key_env is not None else None)
    if key is not None and args.condition != 'correct':
        print(f'infer.py: warning: --condition {args.condition} runs without the correct key; '
              'the key is not used', file=sys.stderr)
        key = None
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter('always', UserWarning)
        inferencer = protected_inferencer(args.config, args.checkpoint, key, args.condition,
                                          args.device, args.seed, args.cfg_options)
    for warning in caught:
        if 'key_protection' in str(warning.message):
            print(f'infer.py: warning: {warning.message}', file=sys.stderr)
    written = segment_images(inferencer, images, Path(args.out), args.opacity, args.with_labels)
    print(f'{args.condition}: wrote {len(written)} palette PNGs to {Path(args.out) / "pred"} '
          f'and overlays to {Path(args.out) / "vis"}')
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except USER_ERRORS as err:
        print(f'infer.py: error: {err.args[0] if err.args else err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
