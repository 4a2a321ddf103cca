"""The weights-only checkpoint loader: mmengine's own checkpoints load, nothing else does."""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader, Runner

from mmseg_keyprotect.engine.checkpoint import SAFE_LOADERS, UnsafeCheckpointError, safe_torch_load

REPO = Path(__file__).parents[2]
CONFIG = REPO / 'configs' / 'demo' / 'fcn_r18-d8_baseline_demo.py'

# Run in a fresh interpreter that never imports mmseg_keyprotect itself: the
# loader must come from the config's custom_imports alone.
RESUME_AND_TEST = '''
import json, sys
from mmengine.config import Config
from mmengine.runner import Runner

config, work_dir, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cfg = Config.fromfile(config)
cfg.merge_from_dict(overrides)
cfg.merge_from_dict({'train_cfg.max_iters': 3, 'work_dir': work_dir, 'resume': True})
runner = Runner.from_cfg(cfg)
runner.train()
resumed_iter = runner.iter

cfg = Config.fromfile(config)
cfg.merge_from_dict(overrides)
cfg.merge_from_dict({'work_dir': work_dir + '/test', 'experiment_name': 'test',
                     'load_from': work_dir + '/iter_3.pth'})
metrics = Runner.from_cfg(cfg).test()
print('RESULT ' + json.dumps({'iter': resumed_iter, 'mIoU': float(metrics['mIoU'])}))
'''


class Custom:
    """A class that is not on the allowlist."""


class OpensAFile:
    """Unpickling this with weights_only=False would create a file."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self):
        return (open, (self.path, 'w'))


class ReachesPastHistoryBuffer:
    """Asks the restricted getattr for something other than a statistics method."""

    def __reduce__(self):
        return (getattr, (HistoryBuffer, '__init__'))


@pytest.fixture(scope='module')
def trained_work_dir(tmp_path_factory: pytest.TempPathFactory,
                     tiny_run_overrides: Dict[str, Any]) -> Path:
    """A work_dir where mmengine's Runner trained the demo model for 2 iterations."""
    work_dir = tmp_path_factory.mktemp('checkpoint_run')
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(tiny_run_overrides)
    cfg.work_dir = str(work_dir)
    Runner.from_cfg(cfg).train()
    assert (work_dir / 'iter_2.pth').is_file()
    return work_dir


@pytest.fixture(params=['weights_only', 'restricted_unpickler'])
def _load(request):
    """Load through mmengine's local scheme, or through the torch < 2.5 path (forced)."""
    if request.param == 'weights_only':
        return lambda path: CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    return lambda path: safe_torch_load(str(path), 'cpu', str(path),
                                        force_restricted_unpickler=True)


@pytest.mark.parametrize('name', [
    'work_dirs/run/iter_2.pth', 'https://host/model.pth', 'http://host/model.pth',
    'torchvision://resnet50', 'modelzoo://resnet50', 'open-mmlab://resnet50_v1c',
    'openmmlab://resnet50_v1c', 'mmcls://resnet50', 's3://bucket/model.pth',
    'petrel://bucket/model.pth', 'pavi://model'])
def test_every_scheme_loads_through_the_safe_loader(name):
    loader = CheckpointLoader._get_checkpoint_loader(name)
    assert loader in SAFE_LOADERS.values(), f'{name} -> {loader.__module__}.{loader.__name__}'
    assert loader.__module__ == 'mmseg_keyprotect.engine.checkpoint'


def test_every_registered_scheme_is_covered():
    ours = set(SAFE_LOADERS.values())
    assert all(loader in ours for loader in CheckpointLoader._schemes.values())


def test_numpy_and_history_buffer_round_trip(tmp_path: Path, _load):
    buffer = HistoryBuffer()
    for value in (1.0, 3.0):
        buffer.update(value)
    arrays = {str(dtype): np.array([0, 1, 2]).astype(dtype) for dtype in
              (np.uint8, np.int32, np.int64, np.float32, np.float64, np.bool_)}
    scalars = [np.float32(0.5), np.float64(1.5), np.int64(7), np.bool_(True)]
    torch.save({'buffer': buffer, 'arrays': arrays, 'scalars': scalars,
                'tensor': torch.ones(2)}, tmp_path / 'ckpt.pth')
    loaded = _load(tmp_path / 'ckpt.pth')
    assert isinstance(loaded['buffer'], HistoryBuffer)
    assert (loaded['buffer'].mean(), loaded['buffer'].max(), loaded['buffer'].current()) \
        == (2.0, 3.0, 3.0)
    for name, array in arrays.items():
        np.testing.assert_array_equal(loaded['arrays'][name], array)
        assert loaded['arrays'][name].dtype == array.dtype
    assert loaded['scalars'] == scalars
    assert [type(s) for s in loaded['scalars']] == [type(s) for s in scalars]


def test_refuses_a_class_that_is_not_allowed(tmp_path: Path, _load):
    torch.save({'state_dict': {}, 'extra': Custom()}, tmp_path / 'custom.pth')
    with pytest.raises(UnsafeCheckpointError, match=rf'{__name__}\.Custom.*not allowed'):
        _load(tmp_path / 'custom.pth')


def test_refuses_code_in_a_checkpoint_without_running_it(tmp_path: Path, _load):
    marker = tmp_path / 'ran'
    torch.save({'state_dict': OpensAFile(str(marker))}, tmp_path / 'evil.pth')
    with pytest.raises(UnsafeCheckpointError, match=r'io\.open') as info:
        _load(tmp_path / 'evil.pth')
    assert not marker.exists()
    assert 'weights_only=False' not in str(info.value)


def test_refuses_numpy_object_arrays(tmp_path: Path, _load):
    torch.save({'x': np.array([1, 'a'], dtype=object)}, tmp_path / 'object.pth')
    with pytest.raises(UnsafeCheckpointError, match='ObjectDType'):
        _load(tmp_path / 'object.pth')


def test_getattr_reaches_only_history_buffer_statistics(tmp_path: Path, _load):
    torch.save({'x': ReachesPastHistoryBuffer()}, tmp_path / 'getattr.pth')
    with pytest.raises(UnsafeCheckpointError, match=r"getattr\(.*HistoryBuffer.*'__init__'\)"):
        _load(tmp_path / 'getattr.pth')


def test_missing_file(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match='nothing.pth'):
        CheckpointLoader.load_checkpoint(str(tmp_path / 'nothing.pth'))


@pytest.mark.skipif(tuple(int(v) for v in torch.__version__.split('.')[:2]) < (2, 6),
                    reason='torch < 2.6 loads with weights_only=False by default')
def test_runner_checkpoint_needs_the_allowlist(trained_work_dir: Path, _load):
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(trained_work_dir / 'iter_2.pth', map_location='cpu')
    checkpoint = _load(trained_work_dir / 'iter_2.pth')
    assert checkpoint['meta']['iter'] == 2
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


def test_resume_and_test_in_a_fresh_process(trained_work_dir: Path,
                                            tiny_run_overrides: Dict[str, Any]):
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run(
        [sys.executable, '-c', RESUME_AND_TEST, str(CONFIG), str(trained_work_dir),
         json.dumps(tiny_run_overrides)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split('RESULT ', 1)[1].splitlines()[0])
    assert result['iter'] == 3
    assert 0.0 <= result['mIoU'] <= 100.0
    assert 'Loads checkpoint by local_weights_only backend' in proc.stdout + proc.stderr
    assert CheckpointLoader.load_checkpoint(str(trained_work_dir / 'iter_3.pth'))['meta']['iter'] \
        == 3
