"""Bad input matrix (issue 7), the rows checked without a runner: each a clear early error.

The rows that run the demo configs through mmengine's ``Runner`` (and check
that nothing was written or trained before the error) are in
``tests/e2e/test_bad_input_matrix.py``, which uses the helpers below; the two
files are the whole matrix. The fixture ``cwd`` (a temporary cwd holding
``work_dirs/demo/owner.key``) is in ``tests/conftest.py``. Rows covered by unit
tests elsewhere are repeated here in one line each, through the same public
mechanism.
"""
from __future__ import annotations

import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import pytest
from mmengine.config import Config

from mmseg_keyprotect.engine import KeyProtectionHook
from mmseg_keyprotect.checkpoint import META_KEY
from mmseg_keyprotect.models import ChannelPermutation
from mmseg_keyprotect.transforms import BlockNegPos, BlockShuffle
from mmseg_keyprotect.protection import Protection, ProtectionMismatchError

DEMO = Path(__file__).resolve().parents[2] / 'configs' / 'demo'
SHF = DEMO / 'fcn_r18-d8_shf-b2_demo.py'
PERM = DEMO / 'fcn_r18-d8_perm-m6_demo.py'


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
def test_four_channel_images_where_the_config_says_3_channels(key):
    # also: tests/unit/transforms/test_block_cipher.py::test_channel_count_check
    cipher = BlockShuffle(block_size=2, key=key, num_channels=3)
    with pytest.raises(ValueError, match=r'shape \(8, 8, 4\) has 4 channel\(s\), but '
                                         r'num_channels=3'):
        cipher(dict(img=np.zeros((8, 8, 4), np.uint8)))


def test_float_images_out_of_range(key):
    # also: tests/unit/transforms/test_block_cipher.py::test_float_out_of_range
    img = np.full((8, 8, 3), 0.5, np.float32)
    img[0, 0, 0] = 256.5
    with pytest.raises(ValueError, match=r'float image of shape \(8, 8, 3\) has values in '
                                         r'\[0.5, 256.5\]; expected the 0..255 range'):
        BlockNegPos(block_size=2, key=key)(dict(img=img))


# -------------------------------------------------- checkpoint of another protection
def test_an_unprotected_checkpoint_starts_a_protected_training_but_is_refused_elsewhere(key):
    """load_from a plain model to fine-tune it under the key: allowed; resuming from it or
    testing it with the protected config: refused (the protections differ)."""
    from mmengine.runner import BaseLoop

    class _Loop(BaseLoop):
        def __init__(self):  # a built training loop over no keyed data
            self.dataloader = []

        def run(self):
            pass

    model = ChannelPermutation(4, key, 'p')
    plain = {'meta': {META_KEY: []}}  # saved by an unprotected run
    starting = SimpleNamespace(model=model, _train_loop=_Loop(), _val_loop=None,
                               _test_loop=None, _resume=False)
    KeyProtectionHook().after_load_checkpoint(starting, plain)
    for runner in (SimpleNamespace(**dict(vars(starting), _resume=True)),
                   SimpleNamespace(**dict(vars(starting), _train_loop=None))):
        with pytest.raises(ProtectionMismatchError, match='trained with protection none'):
            KeyProtectionHook().after_load_checkpoint(runner, plain)


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
