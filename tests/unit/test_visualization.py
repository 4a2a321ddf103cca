"""mmseg_keyprotect.visualization draws the condition grid for a protected model."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from mmengine.config import Config
from PIL import Image


from mmseg_keyprotect import visualization

REPO = Path(__file__).resolve().parents[2]


def test_grid_is_written_for_a_protected_model(tmp_path, key_file, synthetic_voc):
    root = synthetic_voc
    cfg = Config.fromfile(str(REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6_demo.py'))
    cfg.model.protection.key = dict(file=str(key_file))
    cfg.test_dataloader.dataset.data_root = str(root)
    out = visualization.draw_conditions(cfg, None, tmp_path / 'fig' / 'grid.png', num_samples=2)
    image = np.asarray(Image.open(out).convert('RGB'))
    assert image.shape[0] > 300 and image.shape[1] > 1000
    assert image.std() > 10  # not a blank canvas
