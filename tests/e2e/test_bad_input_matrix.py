"""Bad input matrix (issue 7): one test per row, each a clear early error naming the value.

Where a runner is involved the demo configs are run in-process with mmengine's
``Runner`` in a temporary cwd holding ``work_dirs/demo/owner.key`` (the path the
demo configs name). mmengine creates the work_dir and its log file in
``Runner.__init__`` before any plugin code runs, so "before any file is
written" is checked as:

* errors raised while components are built (key sources, point paths,
  channel counts a module declares): no config dump and no checkpoint;
* errors raised by ``KeyProtectionHook.before_run`` (block alignment) or by
  the first batch (image channels): no checkpoint, no metrics and no logged
  training iteration.

The rows checked without a runner (and those covered by unit tests elsewhere,
repeated in one line each) are in ``tests/unit/test_bad_input_matrix.py``,
whose demo configs and helpers are used here; the two files are the whole
matrix.
"""
from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Any, Callable, Dict

import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.protection import ProtectionMismatchError
from tests.conftest import DEMO_KEY_PATH as KEY_PATH
from tests.unit.test_bad_input_matrix import CROP_63, PERM, SHF, demo_cfg


def run(cfg: Config, step: Callable[[Runner], Any] = lambda runner: runner.train()) -> Any:
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return step(Runner.from_cfg(cfg))


def assert_failed_at_build(work: Path) -> None:
    """Nothing but mmengine's log file: no config dump, no checkpoint."""
    assert not list(work.glob('*.py')) and not list(work.rglob('*.pth'))


def assert_nothing_trained(work: Path) -> None:
    """No checkpoint, no metrics, no logged training iteration."""
    assert not list(work.rglob('*.pth')) and not list(work.rglob('scalars.json'))
    assert all('Iter(train)' not in log.read_text() for log in work.rglob('*.log'))


# ------------------------------------------------ block size vs crop / pad / slide
def test_misaligned_crop_stops_training_before_any_checkpoint(cwd, synthetic_voc):
    cfg = demo_cfg(SHF, cwd, synthetic_voc, **CROP_63)
    with pytest.raises(ValueError, match=r'crop_size=\(62, 63\) is not a multiple'):
        run(cfg)  # KeyProtectionHook.before_run (registered by KeyConditionValLoop)
    assert_nothing_trained(cwd / 'work')


def test_slide_misalignment_stops_tools_test_before_the_checkpoint_is_read(cwd, synthetic_voc):
    cfg = demo_cfg(SHF, cwd, synthetic_voc, load_from=str(cwd / 'no_such.pth'),
                   **{'model.test_cfg': dict(mode='slide', crop_size=(32, 32), stride=(15, 16))})
    with pytest.raises(ValueError, match=r'stride=\(15, 16\).*block_size=2'):
        run(cfg, lambda runner: runner.test())  # not FileNotFoundError: checked first


# ------------------------------------------------------------- image channels / range
def test_grayscale_images_where_the_config_says_3_channels(cwd, synthetic_voc):
    cfg = demo_cfg(SHF, cwd, synthetic_voc, **{
        'train_dataloader.dataset.pipeline.0': dict(type='LoadImageFromFile',
                                                    color_type='grayscale')})
    with pytest.raises(ValueError, match=r'BlockShuffle: image of shape \(\d+, \d+\) has 1 '
                                         r'channel\(s\), but num_channels=3'):
        run(cfg)
    assert_nothing_trained(cwd / 'work')


# ------------------------------------------------------------------------ key sources
def _missing(path: Path) -> None:
    path.unlink()


def _directory(path: Path) -> None:
    path.unlink()
    path.mkdir()


def _not_text(path: Path) -> None:
    path.write_bytes(b'\xff\xfe' * 40)


def _world_readable(path: Path) -> None:
    os.chmod(path, 0o644)


@pytest.mark.parametrize('config, damage, error, message', [
    (SHF, _missing, FileNotFoundError, r"key file 'work_dirs/demo/owner.key' does not exist"),
    (PERM, _missing, FileNotFoundError, r"key file 'work_dirs/demo/owner.key' does not exist"),
    (PERM, _directory, ValueError, r"key file 'work_dirs/demo/owner.key' is not a regular file"),
    (PERM, _not_text, ValueError, r"'work_dirs/demo/owner.key' is not a mmseg-keyprotect key "
                                  r'file'),
    (PERM, _world_readable, PermissionError, r"'work_dirs/demo/owner.key' has permissions 0644, "
                                             r'which let others in'),
], ids=['missing-shf', 'missing-perm', 'directory', 'not-a-key-file', 'world-readable'])
def test_bad_key_file(cwd, synthetic_voc, config, damage, error, message):
    # also: tests/unit/test_keys.py::test_from_file_* (SecretKey.from_file)
    damage(cwd / KEY_PATH)
    with pytest.raises(error, match=message):
        run(demo_cfg(config, cwd, synthetic_voc))
    if config == PERM:  # the model is built in Runner.__init__, before the config dump
        assert_failed_at_build(cwd / 'work')
    assert_nothing_trained(cwd / 'work')  # SHF: the pipeline is built when training starts


def test_empty_key_environment_variable(cwd, synthetic_voc, monkeypatch):
    # also: tests/unit/test_keys.py::test_from_env_missing_and_empty
    monkeypatch.setenv('KP_MATRIX_KEY', '')
    cfg = demo_cfg(PERM, cwd, synthetic_voc,
                   **{'model.protection.key': dict(_delete_=True, env='KP_MATRIX_KEY')})
    with pytest.raises(ValueError, match="environment variable 'KP_MATRIX_KEY' holding the key "
                                         'is empty'):
        run(cfg)
    assert_failed_at_build(cwd / 'work')


# ----------------------------------------------------------------- permutation points
def test_point_path_that_does_not_exist(cwd, synthetic_voc):
    # also: tests/unit/models/test_protected.py::test_bad_path_lists_nearby_modules
    cfg = demo_cfg(PERM, cwd, synthetic_voc,
                   **{'model.protection.points': ['decode_head.conv_sag:input']})
    with pytest.raises(ValueError, match=r"no module at path 'decode_head.conv_sag'; nearby "
                                         r"modules: 'decode_head.conv_seg'"):
        run(cfg)
    assert_failed_at_build(cwd / 'work')


def test_channel_count_mismatch(cwd, synthetic_voc):
    # also: tests/unit/models/test_protected.py::test_channel_mismatch_at_{build,forward}*
    point = dict(path='decode_head.conv_seg', where='input', channels=32)
    cfg = demo_cfg(PERM, cwd, synthetic_voc, **{'model.protection.points': [point]})
    with pytest.raises(ValueError, match=r"'decode_head.conv_seg:input': channels=32, but "
                                         r"Conv2d at 'decode_head.conv_seg' has in_channels=64"):
        run(cfg)
    assert_failed_at_build(cwd / 'work')


# -------------------------------------------------- checkpoint of another protection
@pytest.fixture(scope='module')
def checkpoints(tmp_path_factory, synthetic_voc: Path) -> Dict[str, Any]:
    """Checkpoints saved by runners of both demo configs (with ``KeyProtectionHook``); their key."""
    root = tmp_path_factory.mktemp('checkpoints')
    out: Dict[str, Any] = {'key': SecretKey.generate()}
    out['key'].save(root / KEY_PATH)
    with pytest.MonkeyPatch.context() as monkeypatch:
        monkeypatch.chdir(root)
        for name, config in (('shf', SHF), ('perm', PERM)):
            cfg = demo_cfg(config, root, synthetic_voc,
                           custom_hooks=[dict(type='KeyProtectionHook')])
            run(cfg, lambda runner, name=name: runner.save_checkpoint(
                str(root), f'{name}.pth', save_optimizer=False, save_param_scheduler=False))
            out[name] = root / f'{name}.pth'
    return out


@pytest.mark.parametrize('trained, tested, stored, current', [
    ('shf', PERM, r"\[BlockShuffle\(block_size=2, key=<\w{16}>\)\]",
     r"\[PointPermutation\(point='decode_head.conv_seg:input', key=<\w{16}>\)\]"),
    ('perm', SHF, r"\[PointPermutation\(point='decode_head.conv_seg:input', key=<\w{16}>\)\]",
     r"\[BlockShuffle\(block_size=2, key=<\w{16}>\)\]"),
], ids=['shf-into-perm', 'perm-into-shf'])
def test_checkpoint_of_another_protection(cwd, synthetic_voc, checkpoints, trained, tested,
                                          stored, current):
    checkpoints['key'].save(cwd / KEY_PATH, overwrite=True)
    cfg = demo_cfg(tested, cwd, synthetic_voc, load_from=str(checkpoints[trained]))
    with pytest.raises(ProtectionMismatchError,
                       match=f'checkpoint was trained with protection {stored}, but the '
                             f'config has {current}'):
        run(cfg, lambda runner: runner.test())
    assert not (cwd / 'work' / 'key_conditions.json').exists()


def test_checkpoint_of_another_key(cwd, synthetic_voc, checkpoints, key):
    cfg = demo_cfg(PERM, cwd, synthetic_voc, load_from=str(checkpoints['perm']))
    with pytest.raises(ProtectionMismatchError,
                       match=f"only in the checkpoint: .*key=<{checkpoints['key'].fingerprint}>"
                             f'.*only in the config: .*key=<{key.fingerprint}>'):
        run(cfg, lambda runner: runner.test())


def test_checkpoint_of_the_same_protection_loads(cwd, synthetic_voc, checkpoints):
    checkpoints['key'].save(cwd / KEY_PATH, overwrite=True)
    cfg = demo_cfg(PERM, cwd, synthetic_voc, load_from=str(checkpoints['perm']))
    metrics = run(cfg, lambda runner: runner.test())
    assert 'correct/mIoU' in metrics
