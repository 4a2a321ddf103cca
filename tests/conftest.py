"""Shared fixtures: keys, key files and a tiny synthetic dataset, made in temporary directories."""
from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Dict

import pytest
from mmengine.registry import init_default_scope
from mmengine.runner import CheckpointLoader

import mmseg_keyprotect  # noqa: F401  (registers every component)
import mmseg_keyprotect.compat  # noqa: F401  (tests load mmengine checkpoints by hand)
from mmseg_keyprotect.datasets import make_synthetic_voc
from mmseg_keyprotect.checkpoint import safe_torch_load
from mmseg_keyprotect.keys import SecretKey, WeakKeyWarning

#: The key file the demo configs name, relative to the working directory.
DEMO_KEY_PATH = Path('work_dirs') / 'demo' / 'owner.key'


@pytest.fixture(scope='session', autouse=True)
def mmseg_default_scope() -> None:
    """Resolve registry names in mmseg's scope, as configs with default_scope='mmseg' do."""
    init_default_scope('mmseg')


@pytest.fixture
def key() -> SecretKey:
    """A fresh random key."""
    return SecretKey.generate()


@pytest.fixture
def other_key() -> SecretKey:
    """A second, different key."""
    return SecretKey.generate()


@pytest.fixture
def seed_key() -> SecretKey:
    """A deterministic (weak) key for reproducible expectations."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', WeakKeyWarning)
        return SecretKey.from_seed(1234)


@pytest.fixture
def key_file(tmp_path: Path, key: SecretKey) -> Path:
    """``key`` saved with mode 0600 in a temporary directory."""
    return key.save(tmp_path / 'owner.key')


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, key: SecretKey) -> Path:
    """A temporary cwd with ``key`` at ``work_dirs/demo/owner.key`` (the demo configs' key file)."""
    monkeypatch.chdir(tmp_path)
    key.save(tmp_path / DEMO_KEY_PATH)
    return tmp_path


@pytest.fixture(scope='session')
def synthetic_voc(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic VOC-layout dataset (8 train / 4 val images, 64x64), made once."""
    return make_synthetic_voc(tmp_path_factory.mktemp('synthetic_voc'), num_train=8,
                              num_val=4, num_test=4, image_size=(64, 64), seed=0)


@pytest.fixture(scope='module')
def data_root(synthetic_voc: Path) -> str:
    """``synthetic_voc`` as a string, as configs take it."""
    return str(synthetic_voc)


@pytest.fixture(scope='session')
def tiny_run_overrides(synthetic_voc: Path) -> Dict[str, Any]:
    """Config overrides (``--cfg-options`` keys) for a 2-iteration run on ``synthetic_voc``.

    Apply with ``cfg.merge_from_dict(...)``, or pass ``f'{k}={v}'`` items to
    ``--cfg-options`` of ``tools/train.py`` / ``tools/test.py``.
    """
    overrides: Dict[str, Any] = {
        'train_cfg.max_iters': 2,
        'train_cfg.val_interval': 2,
        'default_hooks.checkpoint.interval': 2,
        'default_hooks.logger.interval': 1,
        'train_dataloader.batch_size': 2,
    }
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        overrides[f'{loader}.dataset.data_root'] = str(synthetic_voc)
        overrides[f'{loader}.num_workers'] = 0
        overrides[f'{loader}.persistent_workers'] = False
    return overrides


@pytest.fixture(params=['weights_only', 'restricted_unpickler'])
def _load(request):
    """Load through mmengine's local scheme, or through the torch < 2.5 path (forced).

    Used by ``tests/unit/checkpoint/test_safe_load.py`` and ``tests/e2e/test_runner_checkpoints.py``.
    """
    if request.param == 'weights_only':
        return lambda path: CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    return lambda path: safe_torch_load(str(path), 'cpu', str(path),
                                        force_restricted_unpickler=True)
