"""A new kind of keyed part works everywhere after registering it in one place.

``ToyKeyedInvert`` is written here, in the test: a pipeline transform that
inverts the pixels of a keyed half of the channels. It is registered in mmseg's
``TRANSFORMS`` and, in one line, as a keyed pipeline step
(``@keyed_type(PipelineStep(...))``). Nothing else of the plugin knows it, yet it
is found, described, switched, drawn distinct incorrect keys for, stored in the
checkpoint descriptor by the hook, removed by the attacker's view, and evaluated
by the key-condition test loop.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
import pytest
from mmcv.transforms import BaseTransform
from mmengine.config import Config
from mmengine.runner import CheckpointLoader
from mmseg.registry import TRANSFORMS

from mmseg_keyprotect.engine import KeyProtectedRunner
from mmseg_keyprotect.keyed import KeyedComponent
from mmseg_keyprotect.keys import KeySpec, SecretKey
from mmseg_keyprotect.protection import PipelineStep, Protection, keyed_type

REPO = Path(__file__).resolve().parents[2]
BASELINE = REPO / 'configs' / 'demo' / 'fcn_r18-d8_baseline_demo.py'


@TRANSFORMS.register_module(force=True)
@keyed_type(PipelineStep(block_size_arg=None))
class ToyKeyedInvert(BaseTransform, KeyedComponent):
    """Invert the channels a key selects (``255 - v``); records the conditions it saw."""

    seen: List[str] = []

    def __init__(self, key: KeySpec = None) -> None:
        self._init_key(key)

    def derived_tables(self, key: SecretKey) -> Optional[bytes]:
        return bytes(self._mask(key))

    @staticmethod
    def _mask(key: SecretKey) -> np.ndarray:
        return key.permutation('toy/invert', 3) < 2  # two of the three channels

    def transform(self, results: Dict[str, Any]) -> Dict[str, Any]:
        ToyKeyedInvert.seen.append(self.key_condition)
        if self.active_key is not None:
            img = results['img'].copy()
            mask = self._mask(self.active_key)
            img[..., mask] = 255 - img[..., mask]
            results['img'] = img
        return results


def toy_config(synthetic_voc: Path, key_file: Path, work_dir: Path) -> Config:
    cfg = Config.fromfile(str(BASELINE))
    toy = dict(type='ToyKeyedInvert', key=dict(file=str(key_file)))
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        pipeline = cfg[loader].dataset.pipeline
        pipeline.insert(len(pipeline) - 1, dict(toy))  # before PackSegInputs
        cfg[loader].dataset.data_root = str(synthetic_voc)
        cfg[loader].num_workers = 0
        cfg[loader].persistent_workers = False
    cfg.train_cfg.max_iters = 1
    cfg.train_cfg.val_interval = 10
    cfg.default_hooks.checkpoint.interval = 1
    cfg.test_cfg = dict(type='KeyConditionTestLoop', incorrect=2, seed=0)
    cfg.work_dir = str(work_dir)
    return cfg


def test_protection_finds_describes_and_switches_the_toy(key):
    toy = ToyKeyedInvert(key=key)
    protection = Protection.of([toy])
    assert protection.describe() == [{'type': 'ToyKeyedInvert', 'key': key.fingerprint}]
    with protection.applied('plain'):
        assert toy.active_key is None
    keys, _ = protection.incorrect_keys(2, seed=0)
    assert all(toy.derived_tables(k) != toy.derived_tables(key) for k in keys)
    assert toy.derived_tables(keys[0]) != toy.derived_tables(keys[1])


def test_incorrect_keys_are_distinct_in_the_toys_small_table_space(key):
    # 3 masks with two channels set: at most 2 incorrect keys differ from the correct one.
    protection = Protection.of([ToyKeyedInvert(key=key)])
    assert len(protection.incorrect_keys(2, seed=0)[0]) == 2
    with pytest.raises(ValueError, match='too small'):
        protection.incorrect_keys(3, seed=0)


def test_attacker_view_removes_the_toy(synthetic_voc, key_file, tmp_path):
    cfg = toy_config(synthetic_voc, key_file, tmp_path)
    assert len(Protection.from_config(cfg).pipeline_steps()) == 3
    view, removed = Protection.from_config(cfg).attacker_view()
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert all(t['type'] != 'ToyKeyedInvert' for t in view[loader].dataset.pipeline)
    assert [c['type'] for c in removed.ciphers] == ['ToyKeyedInvert']
    assert view.test_cfg == dict(type='TestLoop')


def test_hook_and_test_loop_handle_the_toy(synthetic_voc, key, key_file, tmp_path):
    ToyKeyedInvert.seen.clear()
    runner = KeyProtectedRunner.from_cfg(toy_config(synthetic_voc, key_file, tmp_path / 'run'))
    runner.train()
    checkpoint = CheckpointLoader.load_checkpoint(str(tmp_path / 'run' / 'iter_1.pth'), 'cpu')
    assert checkpoint['meta']['key_protection'] == [
        {'type': 'ToyKeyedInvert', 'key': key.fingerprint}]

    ToyKeyedInvert.seen.clear()
    cfg = toy_config(synthetic_voc, key_file, tmp_path / 'test')
    cfg.load_from = str(tmp_path / 'run' / 'iter_1.pth')
    KeyProtectedRunner.from_cfg(cfg).test()
    report = json.loads((tmp_path / 'test' / 'key_conditions.json').read_text())
    assert sorted(report['per_condition']) == ['correct', 'incorrect/000', 'incorrect/001',
                                               'plain']
    assert report['protection'] == [{'type': 'ToyKeyedInvert', 'key': key.fingerprint}]
    # not a block cipher: one pass per condition, and the toy saw each condition
    assert {'correct', 'plain', 'incorrect'} <= set(ToyKeyedInvert.seen)
    assert ToyKeyedInvert.seen[-1] == 'incorrect'

    other = SecretKey.generate().save(tmp_path / 'other.key')
    cfg = toy_config(synthetic_voc, other, tmp_path / 'mismatch')
    cfg.load_from = str(tmp_path / 'run' / 'iter_1.pth')
    with pytest.raises(ValueError, match='ToyKeyedInvert'):
        KeyProtectedRunner.from_cfg(cfg).test()
