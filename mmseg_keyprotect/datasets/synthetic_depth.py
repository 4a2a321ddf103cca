"""A tiny deterministic depth dataset in the layout of mmseg's ``NYUDataset``.

The synthetic images of :mod:`~mmseg_keyprotect.datasets.synthetic`, each with
a depth map: a floor that recedes from the bottom row (1 m) to the top row
(6 m), and every shape standing flat in front of it at its own depth. It lets a
depth estimator (mmseg's ``DepthEstimator``) run mmseg's own ``NYUDataset``,
``LoadDepthAnnotation`` and ``DepthMetric`` without a download::

    root/
      images/test/bedroom_00000.jpg ...
      annotations/test/bedroom_00000.png ...   (16-bit PNG, depth in millimetres)

The file names start with an NYU scene class (``bedroom``), from which
``NYUDataset`` reads each image's ``category_id``.

Example:
    >>> root = make_synthetic_nyu('data/synthetic_nyu', num_images=2)
    >>> sorted(p.name for p in (root / 'images' / 'test').iterdir())
    ['bedroom_00000.jpg', 'bedroom_00001.jpg']
"""
from __future__ import annotations

from pathlib import Path
from typing import Sequence, Union

import cv2
import numpy as np

from .synthetic import _check_args, _encode_jpeg, render_sample

__all__ = ['make_synthetic_nyu']

#: Depth of the floor at the bottom and the top row, in metres.
_FLOOR_DEPTH = (1.0, 6.0)


def _depth_map(rng: np.random.Generator, label: np.ndarray) -> np.ndarray:
    """Depth in millimetres (uint16): the receding floor, each shape at its own depth."""
    height, width = label.shape
    near, far = _FLOOR_DEPTH
    depth = np.repeat(np.linspace(far, near, height)[:, None], width, axis=1)
    for class_index in np.unique(label[label > 0]):
        depth[label == class_index] = rng.uniform(near, far)
    return np.round(depth * 1000).astype(np.uint16)


def make_synthetic_nyu(root: Union[str, Path],
                       num_images: int = 2,
                       image_size: Sequence[int] = (64, 64),
                       seed: int = 0,
                       split: str = 'test') -> Path:
    """Write ``num_images`` images and depth maps under ``root`` in the NYU layout.

    Args:
        root: the dataset folder (created if missing).
        num_images: number of images. Defaults to 2.
        image_size: ``(H, W)``, each at least 16. Defaults to ``(64, 64)``.
        seed: the same seed gives byte-identical files. Defaults to 0.
        split: the sub-folder of ``images/`` and ``annotations/``. Defaults to ``'test'``.

    Returns:
        Path: ``root``.

    Raises:
        ValueError: naming the offending argument if ``num_images`` is below 1
            or ``image_size`` is not two integers >= 16.
    """
    if isinstance(num_images, bool) or not isinstance(num_images, (int, np.integer)) \
            or num_images < 1:
        raise ValueError(f'num_images must be an integer >= 1, got {num_images!r}')
    size = _check_args(1, 1, image_size)
    root = Path(root)
    img_dir, depth_dir = root / 'images' / split, root / 'annotations' / split
    for folder in (img_dir, depth_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for index in range(num_images):
        rng = np.random.default_rng([int(seed), index])
        image, label = render_sample(rng, size)
        name = f'bedroom_{index:05d}'
        (img_dir / f'{name}.jpg').write_bytes(_encode_jpeg(image))
        cv2.imwrite(str(depth_dir / f'{name}.png'), _depth_map(rng, label))
    return root
