"""Every configs/stanford_background/ config trains 2 iterations and tests under key
conditions on a fixture of the raw dataset prepared in the test (no real data)."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

from mmseg_keyprotect.datasets.stanford_background import (prepare_stanford_background,
                                                            read_split_lists)
from mmseg_keyprotect.engine import KeyProtectedRunner
from mmseg_keyprotect.keys import SecretKey
from tests.stanford_fixture import make_raw_copy, write_lists

REPO = Path(__file__).resolve().parents[2]
FOLDER = REPO / 'configs' / 'stanford_background'
#: A block cipher and a permutation run by default; the rest with -m slow.
DEFAULT = {'ffx-b16', 'perm-m1'}


def _kind(path: Path) -> str:
    return path.stem.split('_')[2]


CONFIGS = [pytest.param(p, id=p.stem, marks=() if _kind(p) in DEFAULT else pytest.mark.slow)
           for p in sorted(FOLDER.glob('*.py'))]


@pytest.fixture(scope='module')
def prepared(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('stanford')
    lists = read_split_lists(write_lists(root / 'lists'))
    return Path(prepare_stanford_background(make_raw_copy(root / 'iccv09Data'), root / 'data',
                                            lists).out)


@pytest.mark.parametrize('config', CONFIGS)
def test_two_iterations_then_key_conditions(config, prepared, tmp_path, monkeypatch):
    monkeypatch.setenv('KP_KEY_FILE', str(SecretKey.generate().save(tmp_path / 'owner.key')))
    cfg = Config.fromfile(str(config))
    overrides = {'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
                 'default_hooks.checkpoint.interval': 2, 'train_dataloader.batch_size': 2,
                 'test_cfg.incorrect': 2}
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        overrides.update({f'{loader}.dataset.data_root': str(prepared),
                          f'{loader}.num_workers': 0, f'{loader}.persistent_workers': False})
    cfg.merge_from_dict(overrides)
    cfg.work_dir = str(tmp_path / 'work')
    KeyProtectedRunner.from_cfg(cfg).train()
    cfg.load_from = str(tmp_path / 'work' / 'iter_2.pth')
    metrics = KeyProtectedRunner.from_cfg(cfg).test()
    assert 0 <= metrics['correct/mIoU'] <= 100
    protected = _kind(config) not in ('2k',)
    assert ('incorrect/mIoU_mean' in metrics) == protected
