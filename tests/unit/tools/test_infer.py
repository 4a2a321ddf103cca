"""tools/infer.py's image arguments: directories, globs and clashing output names.

Predictions under each key condition, and key errors, with a trained model:
``tests/e2e/tools/test_infer.py``.
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

from mmseg_keyprotect.inference import ImageSpecError

REPO = Path(__file__).resolve().parents[3]
sys.path.insert(0, str(REPO / 'tools'))

import infer  # noqa: E402


def test_images_from_directories_and_globs(tmp_path):
    for name in ('b.jpg', 'a.png', 'notes.txt'):
        (tmp_path / name).write_bytes(b'')
    assert infer.expand_images([str(tmp_path)]) == [tmp_path / 'a.png', tmp_path / 'b.jpg']
    assert infer.expand_images([str(tmp_path / '*.jpg')]) == [tmp_path / 'b.jpg']
    with pytest.raises(ImageSpecError, match='does not exist'):
        infer.expand_images([str(tmp_path / 'missing.jpg')])
    with pytest.raises(ImageSpecError, match='matches no image'):
        infer.expand_images([str(tmp_path / '*.bmp')])
    (tmp_path / 'sub').mkdir()
    shutil.copy(tmp_path / 'a.png', tmp_path / 'sub' / 'a.png')
    with pytest.raises(ImageSpecError, match='both be written as a.png'):
        infer.expand_images([str(tmp_path / 'a.png'), str(tmp_path / 'sub' / 'a.png')])
