"""Tests for mmseg_keyprotect.keys.sources: validating, resolving, replacing and redacting
the key sources of a config; fingerprint checks."""
from __future__ import annotations

from pathlib import Path

import pytest
from mmengine.config import Config

from mmseg_keyprotect.keys import (SecretKey, WeakKeyWarning, find_key_sources, is_key_source,
                                   key_from, replace_key_sources, resolve_key,
                                   resolve_key_sources)
from mmseg_keyprotect.protection import KeyMismatchError, check_key_fingerprints

REPO = Path(__file__).resolve().parents[3]
SHF = REPO / 'configs' / 'demo' / 'fcn_r18-d8_shf-b2_demo.py'
PERM = REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6_demo.py'


def test_is_key_source(key):
    assert is_key_source(key)
    assert is_key_source(dict(file='a.key')) and is_key_source(dict(env='K'))
    assert is_key_source(dict(type='SecretKey', seed=0))
    assert not is_key_source(dict(file='a', env='K'))
    assert not is_key_source(dict(type='BlockShuffle', file='a'))
    assert not is_key_source('work_dirs/owner.key')


def test_finds_every_key_field_of_a_cipher_config():
    paths = [path for path, _ in find_key_sources(Config.fromfile(str(SHF)))]
    assert 'key' in paths and 'cipher.key' in paths
    for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        assert any(p.startswith(f'{loader}.dataset.pipeline.') for p in paths), loader
    assert 'model.protection.key' in [p for p, _ in find_key_sources(Config.fromfile(str(PERM)))]


def test_replace_reaches_nested_and_tuple_fields(key):
    cfg = dict(model=dict(data_preprocessor=dict(type='X', key=dict(env='A')),
                          protection=dict(key=dict(file='a.key'))),
               pipelines=(dict(type='BlockNegPos', key=dict(seed=1, published=True)), dict(type='Pack')),
               other=dict(key='not a key source'))
    paths = replace_key_sources(cfg, key)
    assert sorted(paths) == ['model.data_preprocessor.key', 'model.protection.key',
                             'pipelines.0.key']
    assert cfg['pipelines'][0]['key'] is key and cfg['model']['protection']['key'] is key
    assert cfg['other']['key'] == 'not a key source'
    assert [v for _, v in find_key_sources(cfg)] == [key, key, key]


def test_resolve_reads_each_source_once_and_names_the_path(key_file, key, tmp_path):
    cfg = Config.fromfile(str(SHF))
    replace_key_sources(cfg, dict(file=str(key_file)))
    resolved = resolve_key_sources(cfg)
    assert set(resolved.values()) == {key}
    assert cfg.test_dataloader.dataset.pipeline[3].key == key
    missing = Config.fromfile(str(PERM))
    missing.model.protection.key = dict(file=str(tmp_path / 'missing.key'))
    with pytest.raises(FileNotFoundError, match=r'^model\.protection\.key: key file .*missing'):
        resolve_key_sources(missing)


def test_check_key_fingerprints(key, other_key):
    stored = [dict(type='PointPermutation', point='p', key=key.fingerprint)]
    check_key_fingerprints(stored, [key])
    with pytest.raises(KeyMismatchError) as info:
        check_key_fingerprints(stored, [other_key])
    message = str(info.value)
    assert key.fingerprint in message and other_key.fingerprint in message
    assert key.export_hex() not in message and other_key.export_hex() not in message


@pytest.mark.parametrize('spec, error, match', [
    (None, ValueError, 'needs a key'),
    ('0' * 64, ValueError, 'not as a literal'),
    (dict(), ValueError, 'exactly one of'),
    (dict(file='a', env='b'), ValueError, 'exactly one of'),
    (dict(url='x'), ValueError, "unknown key source 'url'"),
    (dict(env='KP_DEFINITELY_UNSET_VAR'), KeyError, 'KP_DEFINITELY_UNSET_VAR'),
    (42, ValueError, 'cannot make a key from a int'),
])
def test_resolve_key_errors(spec, error, match):
    with pytest.raises(error, match=match):
        resolve_key(spec, 'BlockShuffle')


def test_resolve_key_sources(key, key_file, monkeypatch):
    monkeypatch.setenv('KP_TEST_KEY', key.export_hex())
    assert resolve_key(key) is key
    assert resolve_key(dict(file=str(key_file))) == key
    assert resolve_key(dict(env='KP_TEST_KEY')) == key
    with pytest.warns(WeakKeyWarning):
        assert resolve_key(dict(seed=3, published=True)) == SecretKey.from_seed(3)


@pytest.mark.parametrize('spec, match', [
    (dict(seed=3), r'published key.*key=dict\(seed=3, published=True\)'),
    (dict(seed=3, published=False), 'published key'),
    (dict(seed='<redacted>', published=True), 'redacted'),
    (dict(file='<redacted>'), 'redacted'),
    (dict(env='X', published=True), r"takes no field\(s\) \['published'\]"),
])
def test_seed_keys_are_an_explicit_opt_in(spec, match):
    with pytest.raises(ValueError, match=match):
        resolve_key(spec)



def test_key_from_takes_a_key_a_path_or_a_source(key, key_file, monkeypatch):
    monkeypatch.setenv('KP_TEST_KEY', key.export_hex())
    assert key_from(key) is key
    assert key_from(key_file) == key and key_from(str(key_file)) == key
    assert key_from(dict(env='KP_TEST_KEY')) == key
    with pytest.raises(FileNotFoundError, match='nowhere.key'):
        key_from(key_file.parent / 'nowhere.key')
    with pytest.raises(ValueError, match='key must be a SecretKey, a key file path.*got int'):
        key_from(42)
