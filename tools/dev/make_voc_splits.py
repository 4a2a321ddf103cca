"""Split PASCAL VOC 2012's 1464 segmentation training images into 1318 train / 146 dev.

Both papers train on 1318 of the 1464 images listed in VOC2012's
``ImageSets/Segmentation/train.txt`` and keep the other 146 for development
(model selection); they do not say which images. This script makes one fixed
split: the names are ordered by SHA-256 of ``"{seed}:{name}"`` and the first
146 form the development set. The result depends on nothing but the names and
the seed (no random-generator implementation, platform or input order), and
each list is written sorted, one name per line, as VOC's own lists are.

The lists it wrote with the defaults ship in ``configs/_base_/splits/`` and
the protocol configs read them from there::

    python tools/dev/make_voc_splits.py            # from data/VOCdevkit/VOC2012/...
    python tools/dev/make_voc_splits.py --check    # do the shipped lists match your VOC copy?
    python tools/dev/make_voc_splits.py --train-list PATH --out-dir DIR
"""
from __future__ import annotations

import argparse
import hashlib
from pathlib import Path
from typing import List, Optional, Sequence, Tuple

REPO = Path(__file__).resolve().parents[2]
DEFAULT_TRAIN_LIST = Path('data/VOCdevkit/VOC2012/ImageSets/Segmentation/train.txt')
DEFAULT_OUT_DIR = REPO / 'configs' / '_base_' / 'splits'
NUM_TRAIN_IMAGES = 1464  # VOC2012 ImageSets/Segmentation/train.txt
NUM_DEV = 146
SEED = 0
TRAIN_NAME = 'voc12_train1318.txt'
DEV_NAME = 'voc12_dev146.txt'


def read_names(path: Path) -> List[str]:
    """The image names of a VOC list file, one per non-empty line.

    Raises:
        ValueError: if a name appears twice.
    """
    names = [line.strip() for line in path.read_text().splitlines() if line.strip()]
    seen = set()
    for name in names:
        if name in seen:
            raise ValueError(f'{path}: {name!r} is listed twice')
        seen.add(name)
    return names


def split_names(names: Sequence[str], num_dev: int = NUM_DEV,
                seed: int = SEED) -> Tuple[List[str], List[str]]:
    """Split ``names`` into (train, dev), dev holding ``num_dev`` names; both sorted.

    Args:
        names: distinct image names.
        num_dev: size of the development set, 1 <= num_dev < len(names).
        seed: selects which names go to dev.

    Returns:
        tuple: the sorted train names and the sorted dev names.

    Raises:
        ValueError: if ``num_dev`` is out of range or a name repeats.
    """
    if len(set(names)) != len(names):
        raise ValueError('names must be distinct')
    if not 1 <= num_dev < len(names):
        raise ValueError(f'num_dev must be in [1, {len(names) - 1}], got {num_dev}')
    order = sorted(names, key=lambda n: (hashlib.sha256(f'{seed}:{n}'.encode()).digest(), n))
    dev = set(order[:num_dev])
    return sorted(n for n in names if n not in dev), sorted(dev)


def render(names: Sequence[str]) -> str:
    """A list file's text: one name per line."""
    return ''.join(f'{name}\n' for name in names)


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--train-list', type=Path, default=DEFAULT_TRAIN_LIST,
                        help="VOC2012's ImageSets/Segmentation/train.txt "
                        '(default: %(default)s)')
    parser.add_argument('--out-dir', type=Path, default=DEFAULT_OUT_DIR,
                        help='where to write the lists (default: configs/_base_/splits)')
    parser.add_argument('--check', action='store_true',
                        help='write nothing; exit 1 if the lists in --out-dir differ')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Write (or check) the train and development lists."""
    args = parse_args(argv)
    names = read_names(args.train_list)
    if len(names) != NUM_TRAIN_IMAGES:
        raise SystemExit(f'make_voc_splits.py: error: {args.train_list} lists {len(names)} '
                         f"images; expected VOC2012's segmentation train.txt "
                         f'({NUM_TRAIN_IMAGES})')
    train, dev = split_names(names)
    outputs = {args.out_dir / TRAIN_NAME: render(train), args.out_dir / DEV_NAME: render(dev)}
    if args.check:
        stale = [str(p) for p, text in outputs.items()
                 if not p.is_file() or p.read_text() != text]
        if stale:
            raise SystemExit(f'make_voc_splits.py: differs from {args.train_list}: '
                             f'{", ".join(stale)}')
        print(f'{", ".join(str(p) for p in outputs)} match {args.train_list}')
        return
    args.out_dir.mkdir(parents=True, exist_ok=True)
    for path, text in outputs.items():
        path.write_text(text)
    print(f'wrote {len(train)} train names to {args.out_dir / TRAIN_NAME} and '
          f'{len(dev)} development names to {args.out_dir / DEV_NAME} (seed {SEED})')


if __name__ == '__main__':
    main()
