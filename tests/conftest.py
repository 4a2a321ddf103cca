"""Shared fixtures: keys and key files made in temporary directories."""
from __future__ import annotations

import warnings
from pathlib import Path

import pytest
from mmengine.registry import init_default_scope

import mmseg_keyprotect  # noqa: F401  (registers every component)
from mmseg_keyprotect.keys import SecretKey, WeakKeyWarning


@pytest.fixture(scope='session', autouse=True)
def mmseg_default_scope() -> None:
    """Resolve registry names in mmseg's scope, as configs with default_scope='mmseg' do."""
    init_default_scope('mmseg')


@pytest.fixture
def key() -> SecretKey:
    """A fresh random key."""
    return SecretKey.generate()


@pytest.fixture
def other_key() -> SecretKey:
    """A second, different key."""
    return SecretKey.generate()


@pytest.fixture
def seed_key() -> SecretKey:
    """A deterministic (weak) key for reproducible expectations."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', WeakKeyWarning)
        return SecretKey.from_seed(1234)


@pytest.fixture
def key_file(tmp_path: Path, key: SecretKey) -> Path:
    """``key`` saved with mode 0600 in a temporary directory."""
    return key.save(tmp_path / 'owner.key')
