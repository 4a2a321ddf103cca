"""Secret keys: where a key comes from and what is derived from it.

A :class:`SecretKey` is 32 random bytes. Configs name the *source* of a key
(``dict(file=...)``, ``dict(env=...)`` or, for paper reproduction only, the
published ``dict(seed=..., published=True)``), never the key itself, so dumped
configs, logs and checkpoints carry no key material (a run's
:class:`~mmseg_keyprotect.engine.runner.KeyProtectedRunner` also redacts seeds
from what it writes). A key pickles as its source, never as its material.
Everything keyed (permutations, masks, the FFX password) is *derived* from the key with HMAC-SHA256 under a purpose
string, so different purposes never share a stream and the same key gives the
same result in every process, rank and platform. Derived permutations and
masks depend only on :mod:`hashlib` and a stable sort, not on the random
number generators of numpy or torch, so they are identical across versions.

Example:
    >>> key = SecretKey.from_seed(0)  # doctest: +SKIP (warns: weak key)
    >>> perm = key.permutation('shf/block=4/channels=3', 48)
    >>> sorted(perm.tolist()) == list(range(48))
    True
"""
from __future__ import annotations

import errno
import hashlib
import hmac
import os
import secrets
import stat
import warnings
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Union

import numpy as np

__all__ = ['SecretKey', 'KeySpec', 'WeakKeyWarning', 'resolve_key', 'SOURCE_FIELDS', 'REDACTED']

KEY_BYTES = 32
_FILE_HEADER = 'mmseg-keyprotect-key-v1'
_MAX_KEY_FILE_BYTES = 4096


class WeakKeyWarning(UserWarning):
    """A key was made from a small integer seed and can be found by search."""


class SecretKey:
    """A 256-bit secret key with keyed derivations.

    Never construct from a literal in a config; use :meth:`generate`,
    :meth:`from_file`, :meth:`from_env` or :func:`resolve_key`.

    Args:
        material (bytes): exactly 32 bytes of key material.
        source (str): a human-readable, non-secret description of where the
            key came from (shown in ``repr``). Defaults to ``'bytes'``.
        spec (dict, optional): the key source that gives this key again
            (``dict(file=PATH)``, ``dict(env=NAME)``, ...). A key is pickled
            as its source, never as its material (see :meth:`__reduce__`).

    Raises:
        ValueError: if ``material`` is not 32 bytes long.
    """

    __slots__ = ('_material', '_source', '_fingerprint', '_spec')

    def __init__(self, material: bytes, source: str = 'bytes',
                 spec: Optional[Mapping[str, Any]] = None) -> None:
        if not isinstance(material, (bytes, bytearray)):
            raise TypeError(f'key material must be bytes, got {type(material).__name__}')
        if len(material) != KEY_BYTES:
            raise ValueError(f'a key must be {KEY_BYTES} bytes long, got {len(material)} bytes')
        self._material = bytes(material)
        self._source = source
        self._spec = dict(spec) if spec is not None else None
        self._fingerprint = hmac.new(self._material, b'mmseg-keyprotect/fingerprint',
                                     hashlib.sha256).hexdigest()[:16]

    # ------------------------------------------------------------------ sources
    @classmethod
    def generate(cls) -> 'SecretKey':
        """Make a new key from the operating system's secure random source."""
        return cls(secrets.token_bytes(KEY_BYTES), source='generated')

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike],
                  allow_group_read: bool = False) -> 'SecretKey':
        """Read a key file written by :meth:`save` or ``tools/keygen.py``.

        The file is opened without following a symbolic link (``O_NOFOLLOW``)
        and checked on the open descriptor (``fstat``), so it cannot be swapped
        between the check and the read: it must be a regular file owned by the
        current user, with no access for others and, unless
        ``allow_group_read``, none for the group (``chmod 600 PATH``).

        Args:
            path: the key file.
            allow_group_read: also accept group read access (mode 0640), for a
                key shared through a group on purpose. Defaults to False.

        Raises:
            FileNotFoundError: if the file does not exist.
            PermissionError: if the path is a symbolic link, the file belongs
                to another user, its mode lets others (or the group) in, or it
                cannot be read.
            ValueError: if the path is not a regular file or not a key file.
        """
        shown = repr(str(path))
        flags = os.O_RDONLY | getattr(os, 'O_NOFOLLOW', 0) | getattr(os, 'O_CLOEXEC', 0)
        try:
            fd = os.open(path, flags)
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
        if len(raw) > _MAX_KEY_FILE_BYTES or len(lines) != 2 or lines[0] != _FILE_HEADER:
            raise ValueError(f'{shown} is not a mmseg-keyprotect key file '
                             f'(expected a {_FILE_HEADER!r} header line and one hex line)')
        spec = {'file': os.path.abspath(path)}
        if allow_group_read:
            spec['allow_group_read'] = True
        return cls(_parse_hex(lines[1], f'key file {shown}'),
                   source=f'file:{Path(path).name}', spec=spec)

    @classmethod
    def from_env(cls, name: str) -> 'SecretKey':
        """Read a key from an environment variable holding 64 hex digits.

        Raises:
            KeyError: if the variable is not set.
            ValueError: if it is empty or not 64 hex digits.
        """
        if name not in os.environ:
            raise KeyError(f'environment variable {name!r} holding the key is not set; '
                           f'export {name}=$(python tools/keygen.py --hex)')
        value = os.environ[name].strip()
        if not value:
            raise ValueError(f'environment variable {name!r} holding the key is empty')
        return cls(_parse_hex(value, f'environment variable {name!r}'), source=f'env:{name}',
                   spec={'env': name})

    @classmethod
    def from_seed(cls, seed: int) -> 'SecretKey':
        """Make a key from an integer seed, for reproducing the papers only.

        The key space is the seed space: anyone can find a small seed by trying
        seeds. Emits :class:`WeakKeyWarning`.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f'seed must be an int, got {type(seed).__name__}')
        warnings.warn(
            'SecretKey.from_seed makes a low-entropy key that can be recovered by '
            'searching seeds; use it only to reproduce the papers (tools/keygen.py '
            'makes a real key)', WeakKeyWarning, stacklevel=2)
        material = hashlib.sha256(b'mmseg-keyprotect/seed/' + str(int(seed)).encode()).digest()
        return cls(material, source='seed', spec={'seed': int(seed), 'published': True})

    @classmethod
    def random(cls, rng: np.random.Generator) -> 'SecretKey':
        """Draw a key from ``rng``: for *incorrect* keys in evaluation, not for owners."""
        return cls(rng.bytes(KEY_BYTES), source='random')

    # ------------------------------------------------------------------ storage
    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
        """Write the key to ``path`` with mode 0600, atomically.

        The key goes to a new temporary file in the same folder (created with
        ``O_EXCL``, mode 0600), is flushed to disk (``fsync``) and only then
        takes the name ``path``: a crash leaves either no key file or a whole
        one, and no existing file is ever truncated. Without ``overwrite`` the
        name is taken with ``link`` (which fails if ``path`` exists, even if it
        appeared meanwhile); with it, ``rename`` replaces the directory entry
        (a symbolic link at ``path`` is replaced, its target left untouched).

        Args:
            path: where to write. Parent folders are created (mode 0700).
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
                f.write(f'{_FILE_HEADER}\n{self._material.hex()}\n')
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

    def export_hex(self) -> str:
        """The key as 64 hex digits, for ``export NAME=...`` (``dict(env=NAME)``).

        This is the only way to read key material out of a :class:`SecretKey`;
        never log or store its result anywhere but a secret store.
        """
        return self._material.hex()

    # -------------------------------------------------------------- derivations
    @property
    def fingerprint(self) -> str:
        """16 hex digits of HMAC(key, 'fingerprint'): identifies a key, reveals nothing."""
        return self._fingerprint

    @property
    def source(self) -> str:
        """Where the key came from (``'file:NAME'``, ``'env:NAME'``, ``'seed'`` ...)."""
        return self._source

    def derive_bytes(self, purpose: str, length: int = 32) -> bytes:
        """Derive ``length`` pseudo-random bytes for ``purpose``.

        HMAC-SHA256(key, purpose) seeds a SHAKE-256 stream, so any length is
        available and different purposes give independent streams.
        """
        if not purpose:
            raise ValueError('purpose must be a non-empty string')
        seed = hmac.new(self._material, b'mmseg-keyprotect/derive/' + purpose.encode(),
                        hashlib.sha256).digest()
        if length <= len(seed):
            return seed[:length]
        return hashlib.shake_256(seed).digest(length)

    def derive(self, purpose: str) -> np.random.Generator:
        """A ``numpy.random.Generator`` seeded by :meth:`derive_bytes` for ``purpose``.

        Convenient for keyed draws that need not be identical across numpy
        versions. For permutations and masks use :meth:`permutation` and
        :meth:`mask`, which are.
        """
        seed = int.from_bytes(self.derive_bytes(purpose, 32), 'little')
        return np.random.Generator(np.random.PCG64(seed))

    def permutation(self, purpose: str, n: int) -> np.ndarray:
        """A keyed permutation of ``range(n)`` (int64), identical on every platform.

        Sorts ``n`` derived 64-bit values with a stable sort.
        """
        if n < 1:
            raise ValueError(f'permutation size must be >= 1, got {n}')
        values = np.frombuffer(self.derive_bytes(f'perm/{purpose}', 8 * n), dtype='<u8')
        return np.argsort(values, kind='stable').astype(np.int64)

    def mask(self, purpose: str, n: int, num_selected: Optional[int] = None) -> np.ndarray:
        """A keyed boolean mask of length ``n`` with exactly ``num_selected`` True.

        Args:
            purpose: derivation purpose.
            n: mask length.
            num_selected: how many positions are selected; ``n // 2`` by default
                (the papers transform half of the positions of a block).
        """
        k = n // 2 if num_selected is None else num_selected
        if not 0 <= k <= n:
            raise ValueError(f'num_selected must be in [0, {n}], got {k}')
        out = np.zeros(n, dtype=bool)
        out[self.permutation(f'mask/{purpose}', n)[:k]] = True
        return out

    # ---------------------------------------------------------------- dunders
    def __repr__(self) -> str:
        return f'SecretKey(fingerprint={self._fingerprint!r}, source={self._source!r})'

    __str__ = __repr__

    def __eq__(self, other: Any) -> bool:
        if not isinstance(other, SecretKey):
            return NotImplemented
        return hmac.compare_digest(self._material, other._material)

    def __hash__(self) -> int:
        return hash(self._fingerprint)

    def __copy__(self) -> 'SecretKey':
        return self  # immutable

    def __deepcopy__(self, memo: Dict[int, Any]) -> 'SecretKey':
        return self  # immutable: copies of a keyed model share its key

    def __reduce__(self):
        """Pickle the key as its *source*, never as its material.

        A key read from a file or an environment variable is pickled as
        ``dict(file=PATH)`` / ``dict(env=NAME)`` and read again where it is
        unpickled (a dataloader worker started with ``spawn``, another rank),
        which checks that it gives the same fingerprint. A published seed key
        pickles as its seed, and a random wrong key of the evaluation (not a
        secret) as itself. Any other key (``generate()``, raw bytes) has no
        source to read it from again and refuses to be pickled.

        Raises:
            TypeError: for a key without a source.
        """
        if self._source == 'random':
            return (SecretKey, (self._material, 'random'))
        if self._spec is None:
            raise TypeError(
                f'{self!r} cannot be pickled: it has no key source to read it from again, and '
                'mmseg-keyprotect never writes key material into a pickle. Give the key as a '
                "source (key=dict(file=PATH) or key=dict(env=NAME)), or keep the object in "
                'this process')
        return (_reresolve, (dict(self._spec), self._fingerprint))


KeySpec = Union[SecretKey, Mapping[str, Any]]


#: Each key source field and the optional fields it takes.
SOURCE_FIELDS: Dict[str, tuple] = {
    'file': ('allow_group_read', ), 'env': (), 'seed': ('published', )}
#: What :func:`~mmseg_keyprotect.key_sources.redact_key_sources` puts in place of a seed.
REDACTED = '<redacted>'


def resolve_key(spec: Optional[KeySpec], what: str = 'component') -> SecretKey:
    """Turn a key *source* from a config into a :class:`SecretKey`.

    Args:
        spec: a :class:`SecretKey`, or a dict with one of ``file=PATH``
            (optionally ``allow_group_read=True``), ``env=NAME`` or, to
            reproduce the papers only, ``seed=INT`` with ``published=True``
            (a seed is a published key: anyone can find it by trying seeds).
        what: the name of the component asking, for error messages.

    Returns:
        SecretKey: the resolved key.

    Raises:
        ValueError: if ``spec`` is missing or not one of the accepted forms,
            a seed is given without ``published=True``, or the source was
            redacted (a config dumped by a run).
    """
    if isinstance(spec, SecretKey):
        return spec
    if spec is None:
        raise ValueError(f'{what} needs a key: pass key=dict(file=PATH) (see tools/keygen.py) '
                         'or key=dict(env=NAME)')
    if isinstance(spec, (str, bytes, bytearray)):
        raise ValueError(f'{what}: a key must be given by its source, '
                         'key=dict(file=PATH) or key=dict(env=NAME), not as a literal value')
    if not isinstance(spec, Mapping):
        raise ValueError(f'{what}: cannot make a key from a {type(spec).__name__}')
    fields = set(spec) - {'type'}
    primary = fields & set(SOURCE_FIELDS)
    if not primary and len(fields) == 1:
        raise ValueError(f'{what}: unknown key source {next(iter(fields))!r}; '
                         'use file=, env= or seed=')
    if spec.get('type', 'SecretKey') != 'SecretKey' or len(primary) != 1:
        raise ValueError(f'{what}: key source must have exactly one of file=, env=, seed=; '
                         f'got fields {sorted(fields)}')
    field, = primary
    extra = fields - {field} - set(SOURCE_FIELDS[field])
    if extra:
        raise ValueError(f'{what}: a {field}= key source takes no field(s) {sorted(extra)}')
    value = spec[field]
    if value == REDACTED:
        raise ValueError(f'{what}: this key source was redacted when the config was written '
                         'to a run\'s files; give the key source again (e.g. --cfg-options or '
                         'tools/infer.py --key FILE)')
    if field == 'file':
        return SecretKey.from_file(value, allow_group_read=bool(spec.get('allow_group_read')))
    if field == 'env':
        return SecretKey.from_env(value)
    if spec.get('published') is not True:
        raise ValueError(
            f'{what}: key=dict(seed={value!r}) is a published key (anyone finds a seed by '
            'trying seeds), accepted only to reproduce the papers, and then only as '
            f'key=dict(seed={value!r}, published=True); make a real key with tools/keygen.py')
    return SecretKey.from_seed(value)


def _reresolve(spec: Mapping[str, Any], fingerprint: str) -> SecretKey:
    """Unpickle a key: read its source again and check it is still the same key."""
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', WeakKeyWarning)
        key = resolve_key(spec, 'unpickled key')
    if key.fingerprint != fingerprint:
        raise ValueError(f'the key source {key.source!r} now gives the key of fingerprint '
                         f'{key.fingerprint}, but the pickled key had fingerprint {fingerprint}')
    return key


def _check_key_file(info: os.stat_result, shown: str, allow_group_read: bool) -> None:
    """Raise unless an open key file is a regular file of ours with a private mode."""
    if not stat.S_ISREG(info.st_mode):
        raise ValueError(f'key file {shown} is not a regular file')
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


def _parse_hex(text: str, where: str) -> bytes:
    try:
        material = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f'{where} does not hold a hex-encoded key') from None
    if len(material) != KEY_BYTES:
        raise ValueError(f'{where} holds a {len(material)}-byte key; '
                         f'expected {KEY_BYTES} bytes ({2 * KEY_BYTES} hex digits)')
    return material
