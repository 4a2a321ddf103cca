"""The weights-only checkpoint loader: mmengine's own checkpoints load, nothing else does.

A runner's checkpoint, resumed and tested in a fresh process:
``tests/e2e/test_runner_checkpoints.py``. The fixture ``_load`` (both loading
paths) is in ``tests/conftest.py``.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader

from mmseg_keyprotect.checkpoint.safe_load import SAFE_LOADERS, UnsafeCheckpointError


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


@pytest.mark.parametrize('name', [
    'work_dirs/run/iter_2.pth', 'https://host/model.pth', 'http://host/model.pth',
    'torchvision://resnet50', 'modelzoo://resnet50', 'open-mmlab://resnet50_v1c',
    'openmmlab://resnet50_v1c', 'mmcls://resnet50', 's3://bucket/model.pth',
    'petrel://bucket/model.pth', 'pavi://model'])
def test_every_scheme_loads_through_the_safe_loader(name):
    loader = CheckpointLoader._get_checkpoint_loader(name)
    assert loader in SAFE_LOADERS.values(), f'{name} -> {loader.__module__}.{loader.__name__}'
    assert loader.__module__ == 'mmseg_keyprotect.checkpoint.safe_load'


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
