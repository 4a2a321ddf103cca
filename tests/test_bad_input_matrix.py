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

Rows covered by unit tests elsewhere are repeated here in one line each, through
the same public mechanism, so the matrix reads complete in one place.
"""
from __future__ import annotations

import os
import uuid
import warnings
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict

import numpy as np
import pytest
from mmengine.config import Config
from mmengine.runner import Runner

from mmseg_keyprotect.engine import KeyProtectionHook
from mmseg_keyprotect.engine.hooks import META_KEY
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import ChannelPermutation
from mmseg_keyprotect.transforms import BlockNegPos, BlockShuffle
from mmseg_keyprotect.protection import Protection, ProtectionMismatchError

DEMO = Path(__file__).resolve().parents[1] / 'configs' / 'demo'
SHF = DEMO / 'fcn_r18-d8_shf-b2_demo.py'
PERM = DEMO / 'fcn_r18-d8_perm-m6_demo.py'
KEY_PATH = Path('work_dirs') / 'demo' / 'owner.key'


@pytest.fixture
def cwd(tmp_path: Path, monkeypatch, key: SecretKey) -> Path:
    """A temporary cwd with the demo key file at ``work_dirs/demo/owner.key``."""
    monkeypatch.chdir(tmp_path)
    key.save(tmp_path / KEY_PATH)
    return tmp_path


def demo_cfg(config: Path, cwd: Path, data_root: Path, **changes: Any) -> Config:
    """A demo config on the tiny dataset, one process, ``changes`` merged in."""
    cfg = Config.fromfile(str(config))
    cfg.work_dir = str(cwd / 'work')
    cfg.experiment_name = f'matrix_{uuid.uuid4().hex[:8]}'
    cfg.merge_from_dict({'train_cfg.max_iters': 2, 'train_cfg.val_interval': 2,
                         'default_hooks.checkpoint.interval': 1,
                         'test_cfg.incorrect': 1, **changes})
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].dataset.data_root = str(data_root)
        cfg[split].batch_size = 2
        cfg[split].num_workers = 0
        cfg[split].persistent_workers = False
    return cfg


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
CROP_63 = {'train_dataloader.dataset.pipeline.3.crop_size': (62, 63)}


@pytest.mark.parametrize('changes, message', [
    (CROP_63, r'train_dataloader.dataset.pipeline\[3\] RandomCrop crop_size=\(62, 63\) is not '
              r'a multiple of BlockShuffle block_size=2'),
    ({'model.data_preprocessor.size': (64, 65)},
     r'model.data_preprocessor size=\(64, 65\) is not a multiple of BlockShuffle block_size=2'),
    ({'model.test_cfg': dict(mode='slide', crop_size=(33, 32), stride=(16, 16))},
     r"test_cfg \(mode='slide'\) crop_size=\(33, 32\) is not a multiple of BlockShuffle "
     r'block_size=2'),
    ({'model.test_cfg': dict(mode='slide', crop_size=(32, 32), stride=(16, 21))},
     r"test_cfg \(mode='slide'\) stride=\(16, 21\) is not a multiple of BlockShuffle "
     r'block_size=2'),
], ids=['crop', 'preprocessor-size', 'slide-crop', 'slide-stride'])
def test_block_size_not_dividing_crop_pad_or_slide_sizes(cwd, synthetic_voc, changes, message):
    with pytest.raises(ValueError, match=message):
        Protection.from_config(demo_cfg(SHF, cwd, synthetic_voc, **changes)).check_sizes()


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


def test_pad_and_fixed_resize_before_the_cipher_are_checked():
    pipeline = [dict(type='Resize', scale=(60, 64), keep_ratio=False),
                dict(type='Pad', size=(64, 64)),
                dict(type='BlockNegPos', block_size=8, key=dict(seed=1, published=True))]
    cfg = dict(test_dataloader=dict(dataset=dict(pipeline=pipeline)), model={})
    with pytest.raises(ValueError, match=r'Resize scale=\(60, 64\).*BlockNegPos block_size=8'):
        Protection.from_config(cfg).check_sizes()
    pipeline[0]['keep_ratio'] = True  # the output size then depends on the image
    Protection.from_config(cfg).check_sizes()
    pipeline[1]['size'] = (64, 36)
    with pytest.raises(ValueError, match=r'Pad size=\(64, 36\).*block_size=8'):
        Protection.from_config(cfg).check_sizes()


def test_aligned_demo_configs_pass(cwd, synthetic_voc):
    for config in (SHF, PERM):
        Protection.from_config(demo_cfg(config, cwd, synthetic_voc)).check_sizes()


# ------------------------------------------------------------- image channels / range
def test_grayscale_images_where_the_config_says_3_channels(cwd, synthetic_voc):
    cfg = demo_cfg(SHF, cwd, synthetic_voc, **{
        'train_dataloader.dataset.pipeline.0': dict(type='LoadImageFromFile',
                                                    color_type='grayscale')})
    with pytest.raises(ValueError, match=r'BlockShuffle: image of shape \(\d+, \d+\) has 1 '
                                         r'channel\(s\), but num_channels=3'):
        run(cfg)
    assert_nothing_trained(cwd / 'work')


def test_four_channel_images_where_the_config_says_3_channels(key):
    # also: tests/transforms/test_block_cipher.py::test_channel_count_check
    cipher = BlockShuffle(block_size=2, key=key, num_channels=3)
    with pytest.raises(ValueError, match=r'shape \(8, 8, 4\) has 4 channel\(s\), but '
                                         r'num_channels=3'):
        cipher(dict(img=np.zeros((8, 8, 4), np.uint8)))


def test_float_images_out_of_range(key):
    # also: tests/transforms/test_block_cipher.py::test_float_out_of_range
    img = np.full((8, 8, 3), 0.5, np.float32)
    img[0, 0, 0] = 256.5
    with pytest.raises(ValueError, match=r'float image of shape \(8, 8, 3\) has values in '
                                         r'\[0.5, 256.5\]; expected the 0..255 range'):
        BlockNegPos(block_size=2, key=key)(dict(img=img))


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
    # also: tests/test_keys.py::test_from_file_* (SecretKey.from_file)
    damage(cwd / KEY_PATH)
    with pytest.raises(error, match=message):
        run(demo_cfg(config, cwd, synthetic_voc))
    if config == PERM:  # the model is built in Runner.__init__, before the config dump
        assert_failed_at_build(cwd / 'work')
    assert_nothing_trained(cwd / 'work')  # SHF: the pipeline is built when training starts


def test_empty_key_environment_variable(cwd, synthetic_voc, monkeypatch):
    # also: tests/test_keys.py::test_from_env_missing_and_empty
    monkeypatch.setenv('KP_MATRIX_KEY', '')
    cfg = demo_cfg(PERM, cwd, synthetic_voc,
                   **{'model.protection.key': dict(_delete_=True, env='KP_MATRIX_KEY')})
    with pytest.raises(ValueError, match="environment variable 'KP_MATRIX_KEY' holding the key "
                                         'is empty'):
        run(cfg)
    assert_failed_at_build(cwd / 'work')


# ----------------------------------------------------------------- permutation points
def test_point_path_that_does_not_exist(cwd, synthetic_voc):
    # also: tests/models/test_protected.py::test_bad_path_lists_nearby_modules
    cfg = demo_cfg(PERM, cwd, synthetic_voc,
                   **{'model.protection.points': ['decode_head.conv_sag:input']})
    with pytest.raises(ValueError, match=r"no module at path 'decode_head.conv_sag'; nearby "
                                         r"modules: 'decode_head.conv_seg'"):
        run(cfg)
    assert_failed_at_build(cwd / 'work')


def test_channel_count_mismatch(cwd, synthetic_voc):
    # also: tests/models/test_protected.py::test_channel_mismatch_at_{build,forward}*
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


def test_strict_false_and_missing_descriptor_only_warn(key, other_key):
    hook = KeyProtectionHook(strict=False)
    runner = SimpleNamespace(model=ChannelPermutation(4, other_key, 'p'), _train_loop=None,
                             _val_loop=None, _test_loop=None)
    stored = [dict(type='ChannelPermutation', point='p', key=key.fingerprint)]
    hook.after_load_checkpoint(runner, {'meta': {META_KEY: stored}})
    KeyProtectionHook().after_load_checkpoint(runner, {'meta': {}})  # no descriptor: warns
    with pytest.raises(ProtectionMismatchError, match=f"only in the checkpoint: "
                                                      f"\\[ChannelPermutation\\(point='p', "
                                                      f"key=<{key.fingerprint}>"):
        KeyProtectionHook().after_load_checkpoint(runner, {'meta': {META_KEY: stored}})
