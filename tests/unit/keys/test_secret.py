"""Tests for mmseg_keyprotect.keys.secret: making keys, derivations, pickling, secrecy."""
from __future__ import annotations

import base64
import copy
import pickle
import warnings

import numpy as np
import pytest

from mmseg_keyprotect.keys import SecretKey, WeakKeyWarning


def secret_forms(key: SecretKey) -> list:
    """Every printable form of the key material a leak could take."""
    raw = bytes.fromhex(key.export_hex())
    return [key.export_hex(), key.export_hex().upper(), base64.b64encode(raw).decode(),
            base64.urlsafe_b64encode(raw).decode(), repr(raw)]


def test_generate_makes_distinct_32_byte_keys():
    a, b = SecretKey.generate(), SecretKey.generate()
    assert a != b
    assert len(a.export_hex()) == 64
    assert a.fingerprint != b.fingerprint


def test_from_env(monkeypatch, key):
    monkeypatch.setenv('KP_TEST_KEY', key.export_hex())
    assert SecretKey.from_env('KP_TEST_KEY') == key


def test_from_env_missing_and_empty(monkeypatch):
    monkeypatch.delenv('KP_TEST_KEY', raising=False)
    with pytest.raises(KeyError, match='KP_TEST_KEY.*not set'):
        SecretKey.from_env('KP_TEST_KEY')
    monkeypatch.setenv('KP_TEST_KEY', '  ')
    with pytest.raises(ValueError, match='KP_TEST_KEY.*empty'):
        SecretKey.from_env('KP_TEST_KEY')
    monkeypatch.setenv('KP_TEST_KEY', 'zz' * 32)
    with pytest.raises(ValueError, match='not hold a hex-encoded key'):
        SecretKey.from_env('KP_TEST_KEY')


def test_from_seed_warns_and_is_deterministic():
    with pytest.warns(WeakKeyWarning, match='low-entropy'):
        a = SecretKey.from_seed(7)
    with pytest.warns(WeakKeyWarning):
        b = SecretKey.from_seed(7)
        c = SecretKey.from_seed(8)
    assert a == b and a != c


def test_random_keys_follow_the_rng_and_differ():
    keys = [SecretKey.random(np.random.default_rng(0)) for _ in range(2)]
    assert keys[0] == keys[1]
    rng = np.random.default_rng(0)
    drawn = [SecretKey.random(rng) for _ in range(100)]
    assert len({k.fingerprint for k in drawn}) == 100


def test_derivations_are_purpose_separated(key):
    assert key.derive_bytes('a') != key.derive_bytes('b')
    assert key.derive_bytes('a', 64)[:32] != key.derive_bytes('a', 32)  # expanded stream
    assert len(key.derive_bytes('a', 100)) == 100
    assert key.derive('x').integers(1 << 62) == key.derive('x').integers(1 << 62)
    assert key.derive('x').integers(1 << 62) != key.derive('y').integers(1 << 62)
    with pytest.raises(ValueError, match='purpose'):
        key.derive_bytes('')


def test_permutation_and_mask(key, other_key):
    perm = key.permutation('p', 1000)
    assert perm.dtype == np.int64
    assert sorted(perm.tolist()) == list(range(1000))
    assert not np.array_equal(perm, np.arange(1000))
    assert np.array_equal(perm, key.permutation('p', 1000))
    assert not np.array_equal(perm, key.permutation('q', 1000))
    assert not np.array_equal(perm, other_key.permutation('p', 1000))
    mask = key.mask('m', 48)
    assert mask.dtype == bool and mask.sum() == 24
    assert key.mask('m', 48, num_selected=5).sum() == 5
    with pytest.raises(ValueError, match='num_selected'):
        key.mask('m', 4, num_selected=5)


def test_known_answer_pins_derivation():
    """Pins the derivation so a change in numpy/torch/our code cannot silently change keys."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', WeakKeyWarning)
        key = SecretKey.from_seed(0)
    assert key.permutation('kat', 8).tolist() == KAT_PERMUTATION
    assert key.fingerprint == KAT_FINGERPRINT


def test_repr_str_and_format_hide_the_secret(key):
    shown = ' '.join([repr(key), str(key), f'{key}', '%s' % key])
    assert key.fingerprint in shown
    for form in secret_forms(key):
        assert form not in shown


def test_pickle_holds_the_source_not_the_material(key, key_file, monkeypatch):
    """Workers and ranks get the key by reading its source again; a pickle holds no material."""
    from_file = SecretKey.from_file(key_file)
    monkeypatch.setenv('KP_TEST_KEY', key.export_hex())
    from_env = SecretKey.from_env('KP_TEST_KEY')
    for loaded in (from_file, from_env):
        data = pickle.dumps(loaded)
        assert all(form.encode() not in data for form in secret_forms(key))
        assert bytes.fromhex(key.export_hex()) not in data
        assert pickle.loads(data) == key
    # the source now gives another key: unpickling says so instead of using it
    SecretKey.generate().save(key_file, overwrite=True)
    with pytest.raises(ValueError, match='now gives the key of fingerprint'):
        pickle.loads(pickle.dumps(from_file))


def test_pickle_refuses_a_key_without_source(key):
    with pytest.raises(TypeError, match='cannot be pickled.*no key source'):
        pickle.dumps(key)
    with pytest.raises(TypeError, match='cannot be pickled'):
        pickle.dumps({'model': [key]})


def test_random_and_seed_keys_pickle_and_copies_share_the_key(key):
    wrong = SecretKey.random(np.random.default_rng(0))
    assert pickle.loads(pickle.dumps(wrong)) == wrong
    with pytest.warns(WeakKeyWarning):
        seed = SecretKey.from_seed(5)
    assert pickle.loads(pickle.dumps(seed)) == seed  # a published key: read from its seed
    assert seed.published and wrong.published and not key.published
    assert copy.deepcopy(key) is key and copy.copy(key) is key




def test_pickling_the_bytes_depends_on_how_the_key_was_made():
    """public=True (the evaluation's random keys) pickles the bytes; a source label does not."""
    material = bytes(range(32))
    labelled = SecretKey(material, source='random')  # says 'random', is still a secret
    with pytest.raises(TypeError, match='cannot be pickled'):
        pickle.dumps(labelled)
    public = SecretKey(material, source='anything', public=True)
    data = pickle.dumps(public)
    assert material in data  # no secret: its bytes are what it is
    restored = pickle.loads(data)
    assert restored == public and restored.published and pickle.dumps(restored) == data


KAT_PERMUTATION = [2, 5, 0, 3, 1, 7, 4, 6]
KAT_FINGERPRINT = '345a126cee33bf56'
