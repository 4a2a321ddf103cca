"""Tests for mmseg_keyprotect.keys: sources, derivations, errors, secrecy."""
from __future__ import annotations

import base64
import os
import pickle
import stat
import warnings

import numpy as np
import pytest

from mmseg_keyprotect.keys import SecretKey, WeakKeyWarning, resolve_key


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


def test_save_and_from_file_roundtrip_with_mode_0600(tmp_path, key):
    path = key.save(tmp_path / 'sub' / 'k.key')
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    loaded = SecretKey.from_file(path)
    assert loaded == key
    assert loaded.source == 'file:k.key'


def test_save_refuses_to_overwrite(tmp_path, key):
    path = key.save(tmp_path / 'k.key')
    with pytest.raises(FileExistsError, match='refusing to overwrite'):
        SecretKey.generate().save(path)
    other = SecretKey.generate()
    other.save(path, overwrite=True)
    assert SecretKey.from_file(path) == other


def test_from_file_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match='nope.key.*does not exist'):
        SecretKey.from_file(tmp_path / 'nope.key')


@pytest.mark.parametrize('mode', [0o644, 0o640, 0o604])
def test_from_file_refuses_readable_by_others(key_file, mode):
    os.chmod(key_file, mode)
    with pytest.raises(PermissionError, match=f'{mode:04o}.*chmod 600'):
        SecretKey.from_file(key_file)


def test_from_file_wrong_length(tmp_path):
    path = tmp_path / 'short.key'
    path.write_text('mmseg-keyprotect-key-v1\n' + 'ab' * 16 + '\n')
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match='16-byte key; expected 32 bytes'):
        SecretKey.from_file(path)


def test_from_file_not_a_key_file(tmp_path):
    path = tmp_path / 'config.py'
    path.write_text('model = dict()\n')
    os.chmod(path, 0o600)
    with pytest.raises(ValueError, match='not a mmseg-keyprotect key file'):
        SecretKey.from_file(path)


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
    import copy
    wrong = SecretKey.random(np.random.default_rng(0))
    assert pickle.loads(pickle.dumps(wrong)) == wrong
    with pytest.warns(WeakKeyWarning):
        seed = SecretKey.from_seed(5)
    assert str(5).encode() in pickle.dumps(seed)  # a published key: its seed is its source
    assert pickle.loads(pickle.dumps(seed)) == seed
    assert copy.deepcopy(key) is key and copy.copy(key) is key


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


def test_from_file_refuses_symlinks(tmp_path, key_file):
    link = tmp_path / 'link.key'
    link.symlink_to(key_file)
    with pytest.raises(PermissionError, match='symbolic link'):
        SecretKey.from_file(link)
    with pytest.raises(PermissionError, match='symbolic link'):
        resolve_key(dict(file=str(link)))


@pytest.mark.skipif(os.geteuid() != 0, reason='giving a file to another user needs root')
def test_from_file_refuses_another_users_file(key_file):
    os.chown(key_file, 4321, -1)
    with pytest.raises(PermissionError, match='belongs to user id 4321'):
        SecretKey.from_file(key_file)


def test_from_file_refuses_non_regular_files(tmp_path):
    with pytest.raises(ValueError, match='not a regular file'):
        SecretKey.from_file(tmp_path)


def test_group_read_only_when_allowed(key, key_file):
    os.chmod(key_file, 0o640)
    with pytest.raises(PermissionError, match='the group'):
        SecretKey.from_file(key_file)
    assert resolve_key(dict(file=str(key_file), allow_group_read=True)) == key
    os.chmod(key_file, 0o644)
    with pytest.raises(PermissionError, match='others'):
        SecretKey.from_file(key_file, allow_group_read=True)


def test_save_is_atomic_and_never_truncates(tmp_path, key):
    victim = tmp_path / 'victim.txt'
    victim.write_text('keep me')
    link = tmp_path / 'owner.key'
    link.symlink_to(victim)
    with pytest.raises(FileExistsError):
        key.save(link)
    key.save(link, overwrite=True)  # replaces the link, not what it points to
    assert victim.read_text() == 'keep me'
    assert not link.is_symlink() and SecretKey.from_file(link) == key
    assert [p.name for p in tmp_path.iterdir() if p.name.endswith('.tmp')] == []


KAT_PERMUTATION = [2, 5, 0, 3, 1, 7, 4, 6]
KAT_FINGERPRINT = '345a126cee33bf56'
