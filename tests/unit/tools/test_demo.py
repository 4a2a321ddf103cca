"""tools/demo.py's configuration: checkpoint selection on val, numbers reported on test.

The demo run end to end, shortened: ``tests/e2e/tools/test_demo.py``.
"""
from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_demo_selects_on_val_and_reports_on_a_disjoint_test_split(tmp_path):
    """The demo's checkpoint selection (val) and its reported numbers (test) never share images."""
    sys.path.insert(0, str(REPO / 'tools'))
    import demo
    from mmengine.config import Config

    from mmseg_keyprotect.datasets import make_synthetic_voc
    data = make_synthetic_voc(tmp_path / 'data', num_train=2, num_val=5, num_test=5)
    for _, config in demo.MODELS:
        cfg = Config.fromfile(str(REPO / config))
        cfg.merge_from_dict(dict(opt.split('=', 1) for opt in demo.test_options(str(data))))
        val_file = data / cfg.val_dataloader.dataset.ann_file
        test_file = data / cfg.test_dataloader.dataset.ann_file
        assert val_file.name == 'val.txt' and test_file.name == 'test.txt'
        val, test = val_file.read_text().split(), test_file.read_text().split()
        assert val and test and not set(val) & set(test)
        assert cfg.default_hooks.checkpoint.save_best == 'mIoU'  # selection on val
    assert demo.threads_per_job(3, 2) == 1 and demo.threads_per_job(1, 2) == 2


def test_every_demo_config_tests_on_the_reported_split_without_overrides():
    """``tools/test.py configs/demo/X.py CKPT`` alone gives the README's numbers: the test
    split and the key-condition loop with 100 incorrect keys come from the config."""
    from mmengine.config import Config
    configs = sorted((REPO / 'configs' / 'demo').glob('*.py'))
    assert len(configs) >= 10
    for config in configs:
        cfg = Config.fromfile(str(config))
        assert cfg.test_dataloader.dataset.ann_file == 'ImageSets/Segmentation/test.txt', config
        assert cfg.val_dataloader.dataset.ann_file == 'ImageSets/Segmentation/val.txt', config
        assert cfg.test_cfg.type == 'KeyConditionTestLoop', config
        assert cfg.test_cfg.incorrect == 100 and cfg.test_cfg.seed == 0, config
