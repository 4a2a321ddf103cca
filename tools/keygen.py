"""Write a new secret key file (mode 0600) for mmseg-keyprotect.

Usage:
    python tools/keygen.py work_dirs/owner.key     # a key file for key=dict(file=...)
    python tools/keygen.py --hex                   # 64 hex digits for key=dict(env=...)
"""
from __future__ import annotations

import argparse
import sys

from mmseg_keyprotect.keys import SecretKey


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    target = parser.add_mutually_exclusive_group(required=True)
    target.add_argument('path', nargs='?', help='key file to create (refuses to overwrite)')
    target.add_argument('--hex', action='store_true',
                        help='print a new key as hex (for an environment variable) instead')
    parser.add_argument('--force', action='store_true', help='overwrite an existing key file')
    return parser.parse_args(argv)


def main(argv=None) -> int:
    args = parse_args(argv)
    key = SecretKey.generate()
    if args.hex:
        print(key.export_hex())
        return 0
    try:
        path = key.save(args.path, overwrite=args.force)
    except FileExistsError as err:
        print(f'error: {err}', file=sys.stderr)
        return 1
    print(f'wrote key {key.fingerprint} to {path} (mode 0600); keep it secret and backed up')
    return 0


if __name__ == '__main__':
    sys.exit(main())
