"""Tests for mmseg_keyprotect.keys.keyfile: reading key files with their checks, writing them."""
from __future__ import annotations

import os
import stat

import pytest

from mmseg_keyprotect.keys import SecretKey, resolve_key


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
    with pytest.raises(ValueError, match=r'not a regular file \(it is a directory\)'):
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



@pytest.mark.timeout(20)
def test_a_fifo_named_as_key_file_is_refused_without_waiting(tmp_path):
    """Opening a FIFO for reading waits for a writer, unless opened non-blocking."""
    fifo = tmp_path / 'owner.key'
    os.mkfifo(fifo, 0o600)
    with pytest.raises(ValueError, match=r"^key file '.*owner.key' is not a regular file "
                                         r'\(it is a FIFO \(named pipe\)\)$'):
        SecretKey.from_file(fifo)
    with pytest.raises(ValueError, match='FIFO'):
        resolve_key(dict(file=str(fifo)))
