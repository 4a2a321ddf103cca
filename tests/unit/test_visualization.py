"""mmseg_keyprotect.visualization draws the condition grid for a protected model."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
from mmengine.config import Config
from mmseg.registry import DATASETS
from PIL import Image

from mmseg_keyprotect import visualization
from mmseg_keyprotect.apis import init_protected_model
from mmseg_keyprotect.protection import Protection

REPO = Path(__file__).resolve().parents[2]


def demo_config(name: str, data_root: Path) -> Config:
    cfg = Config.fromfile(str(REPO / 'configs' / 'demo' / name))
    cfg.test_dataloader.dataset.data_root = str(data_root)
    return cfg


def test_grid_is_written_for_a_protected_model(tmp_path, key_file, synthetic_voc):
    cfg = demo_config('fcn_r18-d8_perm-m6_demo.py', synthetic_voc)
    cfg.model.protection.key = dict(file=str(key_file))
    out = visualization.draw_conditions(cfg, None, tmp_path / 'fig' / 'grid.png', num_samples=2)
    image = np.asarray(Image.open(out).convert('RGB'))
    assert image.shape[0] > 300 and image.shape[1] > 1000
    assert image.std() > 10  # not a blank canvas


def test_panels_show_each_condition(key, synthetic_voc, monkeypatch):
    """The inputs are what the model sees under each condition; the truth is the label map."""
    monkeypatch.setenv('KP_KEY', key.export_hex())
    cfg = demo_config('fcn_r18-d8_shf-b2_demo.py', synthetic_voc)
    model = init_protected_model(cfg, None, key=dict(env='KP_KEY'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dataset = DATASETS.build(model.cfg.test_dataloader.dataset)
    protection = Protection.of(model, dataset)
    conditions, _ = protection.conditions(incorrect=1, seed=0)
    panels = visualization.condition_panels(model, dataset, protection, conditions, 0)
    assert [p.title for p in panels] == [
        'input, correct key', 'input, plain', 'input, incorrect key', 'ground truth',
        'prediction, correct key', 'prediction, plain', 'prediction, incorrect key']
    correct, plain, incorrect = (p.image for p in panels[:3])
    with protection.applied('plain'):
        shown = visualization.to_display(dataset[0]['inputs'])
    np.testing.assert_array_equal(plain, shown)
    assert not np.array_equal(correct, plain) and not np.array_equal(correct, incorrect)
    (cipher, ) = protection.data_ciphers
    # the correct-key panel is the plain input encrypted (BGR, as the pipeline sees it)
    np.testing.assert_array_equal(correct[..., ::-1], cipher.encrypt(np.ascontiguousarray(
        plain[..., ::-1])))
    palette = np.asarray(dataset.metainfo['palette'], np.uint8)
    gt = panels[3].image
    assert {tuple(c) for c in gt.reshape(-1, 3)} <= {tuple(c) for c in palette}
    assert all(p.caption.startswith('mIoU ') for p in panels[4:])
    # every key is back to correct
    assert all(part.key_condition == 'correct' for part in protection.parts)
