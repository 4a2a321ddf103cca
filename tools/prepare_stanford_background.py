"""Prepare the Stanford Background Dataset in mmseg's layout for configs/stanford_background/.

SOURCE is the official ``iccv09Data.tar.gz``, an extracted folder, or a git
directory and commit ``GIT_DIR@COMMIT[:FOLDER]`` (FOLDER default ``iccv09Data``)::

    python tools/prepare_stanford_background.py iccv09Data.tar.gz --out data/stanford_background
    python tools/prepare_stanford_background.py REPO.git@df9d57bb --out data/stanford_background

The split lists are the fixed ones shipped in ``configs/_base_/splits/``
(train 500 / val 72 for checkpoint selection / test 143, the official val list).
Prints the counts and a fingerprint of the labels; refuses a source with a
missing or unexpected file with one line. See
:mod:`mmseg_keyprotect.datasets.stanford_background`.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import List, Optional

from mmseg_keyprotect.datasets.stanford_background import (SourceError,
                                                            prepare_stanford_background,
                                                            read_split_lists)

SPLIT_DIR = Path(__file__).resolve().parents[1] / 'configs' / '_base_' / 'splits'


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('source', help='iccv09Data.tar.gz, a folder, or GIT_DIR@COMMIT[:FOLDER]')
    parser.add_argument('--out', default='data/stanford_background',
                        help='output folder (default: %(default)s)')
    parser.add_argument('--splits', default=str(SPLIT_DIR),
                        help='folder of stanford_background_{train,val,test}.txt '
                        '(default: the shipped lists)')
    parser.add_argument('--overwrite', action='store_true',
                        help='replace an existing OUT/img_dir and OUT/ann_dir')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Prepare the dataset and say what was written."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        prepared = prepare_stanford_background(args.source, args.out,
                                               read_split_lists(args.splits), args.overwrite)
    except SourceError as err:
        raise SystemExit(f'prepare_stanford_background.py: error: {err}') from None
    counts = ', '.join(f'{n} {split}' for split, n in prepared.counts.items())
    print(f'wrote {counts} images to {prepared.out} in {time.perf_counter() - start:.1f} s')
    print(f'  {prepared.out}/img_dir/{{train,val,test}}/*.jpg, '
          f'{prepared.out}/ann_dir/{{train,val,test}}/*.png (255 = unknown, ignored)')
    print(f'  label fingerprint (sha256): {prepared.label_fingerprint}')


if __name__ == '__main__':
    main()
