"""Write the synthetic segmentation dataset in mmseg's PASCAL VOC layout.

The demo configs (``configs/demo/``) read it from ``data/synthetic_voc``::

    python tools/make_dataset.py                  # 400 train / 100 val / 100 test, 64x64, seed 0
    python tools/make_dataset.py --out /tmp/voc --num-train 8 --num-val 4 --num-test 0

The same arguments always give byte-identical files.
"""
import argparse
import time
from typing import List, Optional

from mmseg_keyprotect.datasets import CLASSES, make_synthetic_voc


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    """Parse the command line."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='data/synthetic_voc',
                        help='dataset folder (default: %(default)s)')
    parser.add_argument('--num-train', type=int, default=400,
                        help='training images (default: %(default)s)')
    parser.add_argument('--num-val', type=int, default=100,
                        help='validation images (default: %(default)s)')
    parser.add_argument('--num-test', type=int, default=100,
                        help='test images, disjoint from val; 0: none (default: %(default)s)')
    parser.add_argument('--size', type=int, nargs=2, default=(64, 64), metavar=('H', 'W'),
                        help='image height and width (default: 64 64)')
    parser.add_argument('--seed', type=int, default=0, help='dataset seed (default: %(default)s)')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    """Write the dataset and say what was written."""
    args = parse_args(argv)
    start = time.perf_counter()
    try:
        root = make_synthetic_voc(args.out, num_train=args.num_train, num_val=args.num_val,
                                  image_size=tuple(args.size), seed=args.seed,
                                  num_test=args.num_test)
    except ValueError as err:
        raise SystemExit(f'make_dataset.py: error: {err}') from None
    print(f'wrote {args.num_train} train + {args.num_val} val + {args.num_test} test images of '
          f'{args.size[0]}x{args.size[1]} (seed {args.seed}) to {root} '
          f'in {time.perf_counter() - start:.1f} s')
    print(f'  {root}/JPEGImages/*.jpg, {root}/SegmentationClass/*.png, '
          f'{root}/ImageSets/Segmentation/{{train,val,test}}.txt')
    print(f'  classes: {", ".join(CLASSES)}')


if __name__ == '__main__':
    main()
