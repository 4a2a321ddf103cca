"""apis: key preparation before anything is built (no model, no Runner)."""
from __future__ import annotations

import pytest
from mmengine.config import Config

from mmseg_keyprotect.apis import KeySetupError, load_config, prepare_keys
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


def test_export_sealed_writes_a_whole_sealed_file_that_loads_back(key, tmp_path):
    import torch
    from mmengine.runner import load_checkpoint

    from mmseg_keyprotect.apis import export_sealed
    from mmseg_keyprotect.checkpoint import MARKER, safe_torch_load, verify_file

    from .models.test_weight_encryption import segmentor
    model = segmentor(key)
    path = export_sealed(model, tmp_path / 'deploy.pth')
    stored = safe_torch_load(str(path), 'cpu')
    assert MARKER in stored['state_dict'] and verify_file(stored, key)['iter'] is None
    restored = segmentor(key, seed=3)
    load_checkpoint(restored, str(path), map_location='cpu', strict=True)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(restored(x, mode='tensor'), model(x, mode='tensor'))
    with pytest.raises(ValueError, match='does not encrypt its weights'):
        export_sealed(segmentor(key, encrypt=False), tmp_path / 'plain.pth')
