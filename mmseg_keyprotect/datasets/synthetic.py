"""A deterministic synthetic segmentation dataset in mmseg's PASCAL VOC layout.

The embedded default data of the project: a few hundred small images that a
small CNN learns in minutes on a CPU, so the demo and the end-to-end tests
need no download. Every image has a smooth, low-saturation background and one
to three filled shapes (disc, ellipse, rectangle, triangle). Each foreground
class is a (colour, texture) pair, and the pairs overlap on purpose so that
neither colour nor texture alone separates the classes:

============  =======  ===========
class         colour   texture
============  =======  ===========
red_stripes   red      stripes
red_checker   red      checkerboard
blue_stripes  blue     stripes
blue_speckle  blue     speckle
green_checker green    checkerboard
============  =======  ===========

Files are written as mmseg's :class:`~mmseg.datasets.PascalVOCDataset`
expects them::

    root/
      JPEGImages/train_00000.jpg ...
      SegmentationClass/train_00000.png ...   (palette PNG, pixel = class index)
      ImageSets/Segmentation/train.txt, val.txt (and test.txt if asked for)

Every image is drawn from its own random stream, seeded by
``(seed, split, index)``, so the same arguments give byte-identical files,
and changing ``num_val`` does not change the training images.

Example:
    >>> root = make_synthetic_voc('data/synthetic_voc', num_train=8, num_val=4)
    >>> sorted(p.name for p in (root / 'ImageSets' / 'Segmentation').iterdir())
    ['train.txt', 'val.txt']
"""
from __future__ import annotations

import io
import os.path as osp
from pathlib import Path
from typing import Callable, Dict, List, Sequence, Tuple, Union

import cv2
import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image

from .label_png import encode_label_png

__all__ = ['CLASSES', 'PALETTE', 'SyntheticVOCDataset', 'make_synthetic_voc', 'render_sample']

CLASSES: Tuple[str, ...] = ('background', 'red_stripes', 'red_checker', 'blue_stripes',
                            'blue_speckle', 'green_checker')
# PASCAL VOC's colours for the first six indices, so masks look familiar.
PALETTE: Tuple[Tuple[int, int, int], ...] = ((0, 0, 0), (128, 0, 0), (0, 128, 0), (128, 128, 0),
                                             (0, 0, 128), (128, 0, 128))
IGNORE_INDEX = 255
_IGNORE_COLOUR = (224, 224, 192)

_COLOURS: Dict[str, Tuple[float, float, float]] = {
    'red': (205.0, 45.0, 40.0),
    'blue': (45.0, 70.0, 210.0),
    'green': (45.0, 175.0, 60.0),
}
_SPLITS = ('train', 'val', 'test')
_JPEG_QUALITY = 95


# ---------------------------------------------------------------------- textures
def _stripes(rng: np.random.Generator, shape: Tuple[int, int]) -> np.ndarray:
    """Binary stripes with a random period (7-11 px), angle and phase."""
    period = rng.uniform(7.0, 11.0)
    angle = rng.uniform(0.0, np.pi)
    yy, xx = np.mgrid[:shape[0], :shape[1]].astype(np.float64)
    phase = (xx * np.cos(angle) + yy * np.sin(angle)) / period + rng.uniform()
    return (np.sin(2 * np.pi * phase) > 0).astype(np.float64)


def _checker(rng: np.random.Generator, shape: Tuple[int, int]) -> np.ndarray:
    """An axis-aligned checkerboard with random cell size (4-6 px) and offset."""
    cell = int(rng.integers(4, 7))
    dy, dx = rng.integers(0, cell, size=2)
    yy, xx = np.mgrid[:shape[0], :shape[1]]
    return (((yy + dy) // cell + (xx + dx) // cell) % 2).astype(np.float64)


def _speckle(rng: np.random.Generator, shape: Tuple[int, int]) -> np.ndarray:
    """Random on/off noise in 2x2-pixel grains."""
    grains = rng.random(((shape[0] + 1) // 2, (shape[1] + 1) // 2)) < 0.5
    return np.kron(grains, np.ones((2, 2)))[:shape[0], :shape[1]]


_TEXTURES: Dict[str, Callable[[np.random.Generator, Tuple[int, int]], np.ndarray]] = {
    'stripes': _stripes,
    'checker': _checker,
    'speckle': _speckle,
}
# Class index -> (colour, texture); index 0 is the background.
_CLASS_STYLE: Dict[int, Tuple[str, str]] = {
    index: tuple(name.split('_'))  # type: ignore[misc]
    for index, name in enumerate(CLASSES) if index > 0
}


def _textured_fill(rng: np.random.Generator, shape: Tuple[int, int], colour: str,
                   texture: str) -> np.ndarray:
    """An ``(H, W, 3)`` float RGB layer: a jittered colour in light/dark texture."""
    light = np.clip(np.array(_COLOURS[colour]) * rng.uniform(0.85, 1.15), 0, 255)
    dark = light * rng.uniform(0.3, 0.5)
    pattern = _TEXTURES[texture](rng, shape)[..., None]
    return dark + pattern * (light - dark)


def _background(rng: np.random.Generator, shape: Tuple[int, int]) -> np.ndarray:
    """A smooth, low-saturation ``(H, W, 3)`` float background."""
    grey = rng.uniform(80.0, 180.0)
    tint = rng.normal(0.0, 12.0, size=3)
    coarse = rng.normal(0.0, 30.0, size=(4, 4)).astype(np.float32)
    smooth = cv2.resize(coarse, (shape[1], shape[0]), interpolation=cv2.INTER_CUBIC)
    return grey + tint + smooth[..., None].astype(np.float64)


# ------------------------------------------------------------------------ shapes
def _shape_mask(rng: np.random.Generator, shape: Tuple[int, int]) -> np.ndarray:
    """A boolean mask of one random disc, ellipse, rectangle or triangle."""
    h, w = shape
    side = min(h, w)
    canvas = np.zeros(shape, dtype=np.uint8)
    cy, cx = int(rng.integers(0, h)), int(rng.integers(0, w))
    ry, rx = (int(v) for v in rng.uniform(0.12, 0.3, size=2) * side)
    kind = int(rng.integers(0, 4))
    if kind == 0:
        cv2.circle(canvas, (cx, cy), max(ry, 2), 1, thickness=-1)
    elif kind == 1:
        angle = float(rng.uniform(0, 180))
        cv2.ellipse(canvas, (cx, cy), (max(rx, 2), max(ry, 2)), angle, 0, 360, 1, thickness=-1)
    elif kind == 2:
        cv2.rectangle(canvas, (cx - rx, cy - ry), (cx + rx, cy + ry), 1, thickness=-1)
    else:
        points = np.stack([cx + rng.uniform(-1, 1, 3) * 1.5 * rx,
                           cy + rng.uniform(-1, 1, 3) * 1.5 * ry], axis=1)
        cv2.fillPoly(canvas, [points.round().astype(np.int32)], 1)
    return canvas.astype(bool)


def render_sample(rng: np.random.Generator,
                  image_size: Tuple[int, int]) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one image and its label map.

    Args:
        rng: the random stream for this sample.
        image_size: ``(H, W)``.

    Returns:
        tuple: ``(image, label)``: an ``(H, W, 3)`` uint8 RGB image and an
        ``(H, W)`` uint8 map of class indices into :data:`CLASSES`.
    """
    image = _background(rng, image_size)
    label = np.zeros(image_size, dtype=np.uint8)
    for _ in range(int(rng.integers(1, 4))):
        class_index = int(rng.integers(1, len(CLASSES)))
        mask = _shape_mask(rng, image_size)
        fill = _textured_fill(rng, image_size, *_CLASS_STYLE[class_index])
        image[mask] = fill[mask]
        label[mask] = class_index
    image += rng.normal(0.0, 6.0, size=image.shape)
    return np.clip(image, 0, 255).round().astype(np.uint8), label


# ------------------------------------------------------------------------ writing
def _encode_jpeg(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format='JPEG', quality=_JPEG_QUALITY, subsampling=0)
    return buffer.getvalue()


def _encode_label(label: np.ndarray) -> bytes:
    return encode_label_png(label, PALETTE, IGNORE_INDEX, _IGNORE_COLOUR)


def _check_args(num_train: int, num_val: int, image_size: Sequence[int]) -> Tuple[int, int]:
    for name, value in (('num_train', num_train), ('num_val', num_val)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f'{name} must be an integer >= 1, got {value!r}')
    if len(image_size) != 2 or any(
            isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 16
            for v in image_size):
        raise ValueError(f'image_size must be (H, W) with integers >= 16, got {image_size!r}')
    return int(image_size[0]), int(image_size[1])


def make_synthetic_voc(root: Union[str, Path],
                       num_train: int = 400,
                       num_val: int = 100,
                       image_size: Sequence[int] = (64, 64),
                       seed: int = 0,
                       num_test: int = 0) -> Path:
    """Write the synthetic dataset under ``root`` in mmseg's VOC layout.

    Existing files with the same names are overwritten; other files are left
    alone.

    Args:
        root: the dataset folder (created if missing).
        num_train: number of training images. Defaults to 400.
        num_val: number of validation images. Defaults to 100.
        image_size: ``(H, W)`` of every image, each at least 16. Defaults to
            ``(64, 64)``.
        seed: the dataset seed; the same seed gives byte-identical files.
            Defaults to 0.
        num_test: number of test images (``test.txt``), drawn from their own
            streams, so disjoint from the validation images: select a checkpoint
            on ``val``, report on ``test``. Defaults to 0 (no test split).

    Returns:
        Path: ``root``.

    Raises:
        ValueError: naming the offending argument if a count is below 1 or
            ``image_size`` is not two integers >= 16.
    """
    size = _check_args(num_train, num_val, image_size)
    if isinstance(num_test, bool) or not isinstance(num_test, (int, np.integer)) or num_test < 0:
        raise ValueError(f'num_test must be an integer >= 0, got {num_test!r}')
    root = Path(root)
    img_dir, seg_dir = root / 'JPEGImages', root / 'SegmentationClass'
    split_dir = root / 'ImageSets' / 'Segmentation'
    for folder in (img_dir, seg_dir, split_dir):
        folder.mkdir(parents=True, exist_ok=True)
    for split_id, (split, count) in enumerate(zip(_SPLITS, (num_train, num_val, num_test))):
        if split == 'test' and not count:
            continue
        names = [f'{split}_{index:05d}' for index in range(count)]
        for index, name in enumerate(names):
            rng = np.random.default_rng([int(seed), split_id, index])
            image, label = render_sample(rng, size)
            (img_dir / f'{name}.jpg').write_bytes(_encode_jpeg(image))
            (seg_dir / f'{name}.png').write_bytes(_encode_label(label))
        (split_dir / f'{split}.txt').write_text(''.join(f'{n}\n' for n in names))
    return root


@DATASETS.register_module()
class SyntheticVOCDataset(BaseSegDataset):
    """The synthetic dataset written by :func:`make_synthetic_voc`.

    A VOC-layout dataset with the six synthetic classes (background included,
    so ``reduce_zero_label=False``; 255 is ignored).

    Args:
        ann_file (str): split list, e.g. ``'ImageSets/Segmentation/train.txt'``
            (relative to ``data_root``).
        img_suffix (str): Defaults to ``'.jpg'``.
        seg_map_suffix (str): Defaults to ``'.png'``.
        **kwargs: passed to :class:`~mmseg.datasets.BaseSegDataset`
            (``data_root``, ``pipeline``, ...). ``data_prefix`` defaults to
            ``dict(img_path='JPEGImages', seg_map_path='SegmentationClass')``.

    Example:
        >>> train = dict(type='SyntheticVOCDataset', data_root='data/synthetic_voc',
        ...              ann_file='ImageSets/Segmentation/train.txt', pipeline=[...])
    """

    METAINFO = dict(classes=CLASSES, palette=[list(c) for c in PALETTE])

    def __init__(self,
                 ann_file: str,
                 img_suffix: str = '.jpg',
                 seg_map_suffix: str = '.png',
                 **kwargs) -> None:
        kwargs.setdefault('data_prefix',
                          dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))
        kwargs.setdefault('reduce_zero_label', False)
        kwargs.setdefault('ignore_index', IGNORE_INDEX)
        super().__init__(ann_file=ann_file, img_suffix=img_suffix,
                         seg_map_suffix=seg_map_suffix, **kwargs)

    def load_data_list(self) -> List[dict]:
        """Read the split list, after checking that the dataset was generated.

        Raises:
            FileNotFoundError: naming the missing split list and the command
                that writes it.
        """
        if not osp.isfile(self.ann_file):
            raise FileNotFoundError(
                f'split list {self.ann_file!r} not found: generate the synthetic dataset '
                f'with `python tools/make_dataset.py --out {self.data_root or "DATA_ROOT"}`')
        return super().load_data_list()
