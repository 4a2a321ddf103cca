"""apis: key preparation before anything is built (no model, no Runner)."""
from __future__ import annotations

import pytest
from mmengine.config import Config

from mmseg_keyprotect.apis import KeySetupError, load_config, prepare_keys
from mmseg_keyprotect.engine.checkpoint import find_checkpoint
from mmseg_keyprotect.keys import SecretKey


def config(key_source) -> Config:
    return Config(dict(
        key=dict(file='unused/leftover.key'),  # a base config's variable nothing uses
        model=dict(type='KeyProtectedEncoderDecoder',
                   protection=dict(key=key_source, points=['a'], encrypt_weights=True)),
        test_dataloader=dict(dataset=dict(pipeline=[
            dict(type='BlockShuffle', block_size=2, key=key_source)]))))


def test_correct_reads_only_the_keys_in_use(key, key_file):
    cfg = config(dict(file=str(key_file)))
    assert prepare_keys(cfg) == [key]
    assert cfg.model.protection.key == key
    assert cfg.test_dataloader.dataset.pipeline[0].key == key


def test_a_given_key_replaces_every_source(key, key_file, tmp_path):
    cfg = config(dict(file='missing.key'))
    assert prepare_keys(cfg, key=str(key_file)) == [key]
    assert cfg.key == key and cfg.model.protection.key == key
    assert prepare_keys(config(None), key=key) == [key]


def test_plain_and_incorrect_read_no_key_and_keep_weights_sealed():
    for condition in ('plain', 'incorrect'):
        cfg = config(dict(file='missing.key'))
        assert prepare_keys(cfg, condition) == []
        assert cfg.model.protection.encrypt_weights is False
        assert isinstance(cfg.model.protection.key, SecretKey)


def test_errors_name_the_source(tmp_path):
    with pytest.raises(KeySetupError, match='model.protection.key.*missing.key'):
        prepare_keys(config(dict(file=str(tmp_path / 'missing.key'))))
    with pytest.raises(KeySetupError, match='KP_SURELY_UNSET'):
        prepare_keys(config(dict(env='KP_SURELY_UNSET')))
    with pytest.raises(ValueError, match='condition must be one of'):
        prepare_keys(config(None), 'sideways')
    with pytest.raises(FileNotFoundError, match='nowhere.py'):
        load_config('nowhere.py')


def test_find_checkpoint_takes_the_highest_iteration(tmp_path):
    for name in ('iter_2.pth', 'iter_10.pth', 'best_mIoU_iter_2.pth', 'best_mIoU_iter_10.pth'):
        (tmp_path / name).write_bytes(b'')
    assert find_checkpoint(tmp_path, 'last').endswith('iter_10.pth')
    assert find_checkpoint(tmp_path, 'best').endswith('best_mIoU_iter_10.pth')
    with pytest.raises(FileNotFoundError, match=r'no iter_\*\.pth'):
        find_checkpoint(tmp_path / 'empty', 'last')
    with pytest.raises(ValueError, match='which'):
        find_checkpoint(tmp_path, 'first')
