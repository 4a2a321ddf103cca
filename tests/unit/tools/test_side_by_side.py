"""tools/side_by_side.py puts images in a row with labels."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / 'tools'))

import side_by_side  # noqa: E402


def test_row_of_scaled_images_with_labels(tmp_path):
    paths = []
    for i, colour in enumerate(((255, 0, 0), (0, 0, 255))):
        paths.append(tmp_path / f'{i}.png')
        Image.new('RGB', (8, 6), colour).save(paths[-1])
    out = side_by_side.side_by_side(paths, ['a', 'b'], tmp_path / 'row.png', scale=2)
    row = np.asarray(Image.open(out).convert('RGB'))
    gap, label = side_by_side.GAP, side_by_side.LABEL_HEIGHT
    assert row.shape == (12 + label + gap, 2 * 16 + 3 * gap, 3)
    assert (row[label:label + 12, gap:gap + 16] == (255, 0, 0)).all()
    assert (row[label:label + 12, 2 * gap + 16:2 * gap + 32] == (0, 0, 255)).all()
    assert (row[:label] < 128).any()  # the labels are drawn


def test_labels_must_match_images(tmp_path):
    with pytest.raises(ValueError, match='2 images but 1 labels'):
        side_by_side.side_by_side([tmp_path / 'a.png', tmp_path / 'b.png'], ['a'],
                                  tmp_path / 'row.png')
