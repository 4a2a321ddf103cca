"""Key files: the text format, reading with permission checks, writing atomically.

A key file holds a header line and the key as hex digits::

    mmseg-keyprotect-key-v1
    <64 hex digits>

It is read only if it is a regular file of the current user that nobody else
may read (``chmod 600``), checked on the open descriptor so it cannot be
swapped between the check and the read, and written so that a crash leaves
either no file or a whole one.
"""
from __future__ import annotations

import errno
import os
import secrets
import stat
from pathlib import Path
from typing import Union

__all__ = ['KEY_BYTES', 'FILE_HEADER', 'parse_hex', 'read_key_file', 'write_key_file']

#: Length of a key in bytes.
KEY_BYTES = 32
#: First line of a key file.
FILE_HEADER = 'mmseg-keyprotect-key-v1'
_MAX_KEY_FILE_BYTES = 4096
# Never follow a link, never block (a FIFO named as key file), never leak to a child.
_READ_FLAGS = (os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_NONBLOCK', 0)
               | getattr(os, 'O_CLOEXEC', 0))
#: File types a key file must not be, by ``stat`` test, for the error message.
_FILE_TYPES = (('a directory', stat.S_ISDIR), ('a FIFO (named pipe)', stat.S_ISFIFO),
               ('a socket', stat.S_ISSOCK), ('a character device', stat.S_ISCHR),
               ('a block device', stat.S_ISBLK))

PathLike = Union[str, os.PathLike]


def parse_hex(text: str, where: str) -> bytes:
    """The key of 64 hex digits in ``text``.

    Raises:
        ValueError: naming ``where`` (never the text), if it is not hex or not 32 bytes.
    """
    try:
        material = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f'{where} does not hold a hex-encoded key') from None
    if len(material) != KEY_BYTES:
        raise ValueError(f'{where} holds a {len(material)}-byte key; '
                         f'expected {KEY_BYTES} bytes ({2 * KEY_BYTES} hex digits)')
    return material


def read_key_file(path: PathLike, allow_group_read: bool = False) -> bytes:
    """The key material of a key file written by :func:`write_key_file`.

    The file is opened without following a symbolic link (``O_NOFOLLOW``) and
    without blocking (``O_NONBLOCK``: a FIFO does not wait for a writer), then
    checked on the open descriptor (``fstat``) before anything is read: it
    must be a regular file owned by the current user, with no access for
    others and, unless ``allow_group_read``, none for the group.

    Args:
        path: the key file.
        allow_group_read: also accept group read access (mode 0640).

    Raises:
        FileNotFoundError: if the file does not exist.
        PermissionError: if the path is a symbolic link, the file belongs to
            another user, its mode lets others (or the group) in, or it cannot be read.
        ValueError: if the path is not a regular file or not a key file.
    """
    shown = repr(str(path))
    try:
        fd = os.open(path, _READ_FLAGS)
    except FileNotFoundError:
        raise FileNotFoundError(f'key file {shown} does not exist; '
                                f'create one with `python tools/keygen.py {path}`') from None
    except OSError as err:
        if err.errno == errno.ELOOP:
            raise PermissionError(f'key file {shown} is a symbolic link; refusing to follow '
                                  'it (give the path of the key file itself)') from None
        raise PermissionError(f'key file {shown} cannot be opened: '
                              f'{errno.errorcode.get(err.errno, err.errno)}') from None
    try:
        _check_key_file(os.fstat(fd), shown, allow_group_read)
        raw = os.read(fd, _MAX_KEY_FILE_BYTES + 1)
    finally:
        os.close(fd)
    try:
        text = raw.decode('ascii')
    except UnicodeDecodeError:
        text = ''
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    if len(raw) > _MAX_KEY_FILE_BYTES or len(lines) != 2 or lines[0] != FILE_HEADER:
        raise ValueError(f'{shown} is not a mmseg-keyprotect key file '
                         f'(expected a {FILE_HEADER!r} header line and one hex line)')
    return parse_hex(lines[1], f'key file {shown}')


def write_key_file(path: PathLike, material: bytes, overwrite: bool = False) -> Path:
    """Write ``material`` as a key file with mode 0600, atomically.

    The key goes to a new temporary file in the same folder (created with
    ``O_EXCL``, mode 0600), is flushed to disk (``fsync``) and only then takes
    the name ``path``: a crash leaves either no key file or a whole one, and no
    existing file is ever truncated. Without ``overwrite`` the name is taken
    with ``link`` (which fails if ``path`` exists, even if it appeared
    meanwhile); with it, ``rename`` replaces the directory entry (a symbolic
    link at ``path`` is replaced, its target left untouched).

    Args:
        path: where to write. Parent folders are created (mode 0700).
        material: the key.
        overwrite: replace an existing file. Defaults to False.

    Returns:
        Path: the written path.

    Raises:
        FileExistsError: if ``path`` exists and ``overwrite`` is False.
    """
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    if not overwrite and (path.exists() or path.is_symlink()):
        raise _exists(path)
    tmp = path.parent / f'.{path.name}.{secrets.token_hex(8)}.tmp'
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, 'O_NOFOLLOW', 0),
                 0o600)
    try:
        with os.fdopen(fd, 'w', encoding='ascii') as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(f'{FILE_HEADER}\n{material.hex()}\n')
            f.flush()
            os.fsync(f.fileno())
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path, follow_symlinks=False)
            except FileExistsError:
                raise _exists(path) from None
    finally:
        if tmp.exists():
            tmp.unlink()
    _fsync_dir(path.parent)
    return path


def _check_key_file(info: os.stat_result, shown: str, allow_group_read: bool) -> None:
    """Raise unless an open key file is a regular file of ours with a private mode."""
    if not stat.S_ISREG(info.st_mode):
        kind = next((name for name, test in _FILE_TYPES if test(info.st_mode)), 'not a file')
        raise ValueError(f'key file {shown} is not a regular file (it is {kind})')
    if hasattr(os, 'geteuid') and info.st_uid != os.geteuid():
        raise PermissionError(f'key file {shown} belongs to user id {info.st_uid}, not to the '
                              f'current user ({os.geteuid()}); refusing a key another user '
                              'could have written')
    mode = stat.S_IMODE(info.st_mode)
    allowed = 0o040 if allow_group_read else 0
    if mode & 0o077 & ~allowed:
        raise PermissionError(
            f'key file {shown} has permissions {mode:04o}, which let '
            f'{"others" if mode & 0o007 else "the group"} in; run `chmod 600 {shown}`'
            + ('' if allow_group_read else
               ' (or, to share it with a group on purpose, chmod 640 and '
               'key=dict(file=..., allow_group_read=True))'))


def _exists(path: Path) -> FileExistsError:
    return FileExistsError(f'key file {str(path)!r} already exists; refusing to overwrite a key '
                           '(models trained with it would become unusable)')


def _fsync_dir(folder: Path) -> None:
    """Flush a folder's entries to disk (where the platform allows opening folders)."""
    try:
        fd = os.open(folder, os.O_RDONLY | getattr(os, 'O_DIRECTORY', 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
