"""The key never shows up in reprs, logs or dumped configs."""
from __future__ import annotations

import base64
import logging

import numpy as np
from mmcv.transforms import Compose
from mmengine.config import Config
from mmengine.logging import MMLogger

from mmseg_keyprotect.keys import SecretKey


def leaked_forms(key: SecretKey) -> list:
    raw = bytes.fromhex(key.export_hex())
    return [key.export_hex(), key.export_hex().upper(), base64.b64encode(raw).decode(),
            base64.b64encode(raw).decode().rstrip('='), str(list(raw))]


def assert_no_key(text: str, key: SecretKey) -> None:
    for form in leaked_forms(key):
        assert form not in text


def pipeline_cfg(key_file) -> list:
    source = dict(file=str(key_file))
    return [dict(type='BlockShuffle', block_size=2, key=source),
            dict(type='BlockNegPos', block_size=2, key=source),
            dict(type='BlockFFX', block_size=2, key=source)]


def test_component_repr_and_str_show_only_the_fingerprint(key, key_file):
    pipeline = Compose(pipeline_cfg(key_file))
    pipeline(dict(img=np.zeros((4, 4, 3), np.uint8)))  # build cached tables first
    for text in (repr(pipeline), str(pipeline)) + tuple(repr(t) for t in pipeline.transforms):
        assert_no_key(text, key)
    assert key.fingerprint in repr(pipeline.transforms[0])


def test_dumped_config_holds_the_source_not_the_key(tmp_path, key, key_file):
    cfg = Config(dict(custom_imports=dict(imports=['mmseg_keyprotect']),
                      train_pipeline=pipeline_cfg(key_file)))
    dumped = tmp_path / 'dumped.py'
    cfg.dump(dumped)
    text = dumped.read_text() + cfg.pretty_text
    assert str(key_file) in text
    assert_no_key(text, key)


def test_logged_pipeline_has_no_key(tmp_path, key, key_file):
    log_file = tmp_path / 'run.log'
    logger = MMLogger.get_instance('kp_secrecy', log_file=str(log_file), log_level=logging.DEBUG)
    pipeline = Compose(pipeline_cfg(key_file))
    out = pipeline(dict(img=np.full((4, 4, 3), 7, np.uint8)))
    logger.info(f'pipeline: {pipeline}')
    logger.debug('keys: %s', [t.correct_key for t in pipeline.transforms])
    for handler in logger.handlers:
        handler.flush()
    text = log_file.read_text()
    assert 'BlockShuffle' in text and key.fingerprint in text
    assert_no_key(text, key)
    assert out['img'].shape == (4, 4, 3)
