"""Protect a model you already trained, or change its key, without training.

Usage:
    python tools/protect.py CONFIG CHECKPOINT --key KEYFILE --out DIR
        [--method {permutation,patch-embedding}] [--points auto | PATH:input ...]
        [--cipher {BlockShuffle,BlockNegPos,BlockScramble,BlockScramble+BlockShuffle,...}]
    python tools/protect.py rekey CONFIG CHECKPOINT --key OLDKEY --new-key NEWKEY --out DIR

Writes DIR/protected_config.py (inherits CONFIG, names the key by its file) and
DIR/protected.pth (weights sealed with the key), checks that the written model
under the key gives the original model's outputs, and runs the key-condition
test (correct / plain / --incorrect keys) if the config's test data exists.
Thin over :func:`mmseg_keyprotect.apis.protect_model` / ``rekey_model``; see
docs/posthoc.md.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

import mmseg_keyprotect  # noqa: F401  (registers components)
import mmseg_keyprotect.compat  # noqa: F401  (weights-only loaders)
from mmseg_keyprotect.apis import protect_model, rekey_model
from mmseg_keyprotect.evaluation import markdown_table
from mmseg_keyprotect.posthoc.patch_embedding import CIPHERS


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument('config', help='the config the checkpoint was trained with')
    parser.add_argument('checkpoint', help='the trained checkpoint')
    parser.add_argument('--out', required=True, help='directory for the config and checkpoint')
    parser.add_argument('--incorrect', type=int, default=100,
                        help='incorrect keys in the key-condition test (default 100)')
    parser.add_argument('--seed', type=int, default=0, help='seed of the incorrect keys')
    parser.add_argument('--no-eval', action='store_true', help='skip the key-condition test')
    parser.add_argument('--device', default='cpu')


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ['rekey']:
        parser = argparse.ArgumentParser(prog='protect.py rekey',
                                         description='move a protected model to a new key')
        _common(parser)
        parser.add_argument('--key', required=True, help='the old key file')
        parser.add_argument('--new-key', required=True, help='the new key file')
        args = parser.parse_args(argv[1:])
        args.command = 'rekey'
        return args
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    _common(parser)
    parser.add_argument('--key', required=True, help='the key file (tools/keygen.py)')
    parser.add_argument('--method', choices=('permutation', 'patch-embedding'),
                        default='permutation')
    parser.add_argument('--cipher', choices=CIPHERS, default='BlockShuffle',
                        help='patch-embedding: the block cipher (block size = patch size); '
                             'BlockScramble[+X] also moves whole blocks (mmseg '
                             "VisionTransformer, mode='whole' at its img_size)")
    parser.add_argument('--points', nargs='+', default=['auto'],
                        help="permutation points: 'auto', a preset or module paths "
                             "('decode_head.conv_seg:input')")
    args = parser.parse_args(argv)
    args.command = 'protect'
    return args


def main(argv: Optional[List[str]] = None) -> int:
    args = parse_args(argv)
    common = dict(evaluate=not args.no_eval, incorrect=args.incorrect, seed=args.seed,
                  device=args.device)
    try:
        if args.command == 'rekey':
            result = rekey_model(args.config, args.checkpoint, args.key, args.new_key, args.out,
                                 **common)
        else:
            points = args.points[0] if len(args.points) == 1 else args.points
            result = protect_model(args.config, args.checkpoint, args.key, args.out,
                                   args.method, points, cipher=args.cipher, **common)
    except (ValueError, OSError) as error:
        print(f'error: {error}', file=sys.stderr)
        return 1
    for line in result.refused:
        print(f'left out {line}')
    timing = ', '.join(f'{k} {v:.1f} s' for k, v in result.seconds.items())
    print(f'protected {len(result.points)} point(s): {", ".join(result.points)}')
    print(f'wrote {result.config} and {result.checkpoint} (sealed); max |logit difference| '
          f'under the key {result.max_difference:.2g}; {timing}')
    if result.report:
        print(markdown_table(result.report['summary']))
    return 0


if __name__ == '__main__':
    sys.exit(main())
