"""Give checkpoints sealed before file manifests existed their manifest, atomically in place.

Usage::

    python tools/upgrade_checkpoint.py work_dirs/run/iter_*.pth --key work_dirs/owner.key
    KP_KEY=... python tools/upgrade_checkpoint.py FILE --key-env KP_KEY

Each file is verified with the key (every tag; nothing is decrypted), its
headers are marked as listed and the manifest is written to a new file that
then replaces the old one (``os.replace``). Files that already have a manifest
are left as they are.
"""
from __future__ import annotations

import argparse
import sys
from typing import List, Optional

from mmseg_keyprotect.checkpoint import EncryptedWeightsError, upgrade_file
from mmseg_keyprotect.keys import SecretKey


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('files', nargs='+', help='sealed checkpoint files')
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument('--key', help='the key file the checkpoints are sealed with')
    source.add_argument('--key-env', help='an environment variable holding the key (hex)')
    args = parser.parse_args(argv)
    key = SecretKey.from_file(args.key) if args.key else SecretKey.from_env(args.key_env)
    failed = 0
    for file in args.files:
        try:
            print(f'{file}: {"upgraded" if upgrade_file(file, key) else "already has a manifest"}')
        except (EncryptedWeightsError, OSError) as err:
            print(f'{file}: not upgraded: {err}', file=sys.stderr)
            failed += 1
    return 1 if failed else 0


if __name__ == '__main__':
    sys.exit(main())
