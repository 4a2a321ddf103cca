"""A tiny copy of the Stanford Background Dataset in its raw layout, made in a test.

``images/ID.jpg``, ``labels/ID.png`` (4-bit palette PNGs, "unknown" = 15) or the official
``labels/ID.regions.txt`` (unknown = -1), ``splits/{train,val}.txt`` and the fixed lists
``stanford_background_{train,val,test}.txt`` for them (``lists/``).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import Dict, List

import numpy as np
from PIL import Image

#: ids of the fixture's fixed lists
LISTS: Dict[str, List[str]] = {'train': ['0000001', '0000002', '1000003'],
                               'val': ['0000004'], 'test': ['6000005', '9000006']}
SIZE = (24, 32)  # H, W


def raw_label(index: int) -> np.ndarray:
    """The label of image ``index`` with classes 0..7 and unknown as -1."""
    rng = np.random.default_rng(index)
    label = rng.integers(0, 8, size=SIZE)
    label[0, :4] = -1  # some unknown pixels in every image
    return label


def png_bytes(values: np.ndarray) -> bytes:
    """A 4-bit palette PNG holding ``values`` (0..15)."""
    png = Image.fromarray(values.astype(np.uint8), mode='P')
    png.putpalette(list(range(48)))
    buffer = io.BytesIO()
    png.save(buffer, format='PNG', bits=4)
    return buffer.getvalue()


def make_raw_copy(root: Path, regions: bool = False, splits: bool = True) -> Path:
    """Write the fixture under ``root``; ``regions``: labels as ``regions.txt`` (official)."""
    (root / 'images').mkdir(parents=True)
    (root / 'labels').mkdir()
    ids = [i for split in ('train', 'val', 'test') for i in LISTS[split]]
    for index, image_id in enumerate(ids):
        rng = np.random.default_rng(100 + index)
        Image.fromarray(rng.integers(0, 256, size=(*SIZE, 3), dtype=np.uint8)).save(
            root / 'images' / f'{image_id}.jpg', quality=90)
        label = raw_label(index)
        if regions:
            np.savetxt(root / 'labels' / f'{image_id}.regions.txt', label, fmt='%d')
        else:
            (root / 'labels' / f'{image_id}.png').write_bytes(
                png_bytes(np.where(label < 0, 15, label)))
    (root / 'README').write_text('README FOR ICCV09DATA\n')
    if splits:
        (root / 'splits').mkdir()
        (root / 'splits' / 'train.txt').write_text(
            '\n'.join(LISTS['train'] + LISTS['val']) + '\n')
        (root / 'splits' / 'val.txt').write_text('\n'.join(LISTS['test']) + '\n')
    return root


def write_lists(folder: Path) -> Path:
    """The fixed lists of the fixture, as ``stanford_background_{split}.txt`` files."""
    folder.mkdir(parents=True, exist_ok=True)
    for split, ids in LISTS.items():
        (folder / f'stanford_background_{split}.txt').write_text('\n'.join(ids) + '\n')
    return folder
