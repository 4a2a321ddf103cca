"""Secret keys: where a key comes from and what is derived from it.

A :class:`SecretKey` is 32 random bytes. Configs name the *source* of a key
(``dict(file=...)``, ``dict(env=...)`` or, for paper reproduction only,
``dict(seed=...)``), never the key itself, so dumped configs, logs and
checkpoints carry no key material. Everything keyed (permutations, masks, the
FFX password) is *derived* from the key with HMAC-SHA256 under a purpose
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

import hashlib
import hmac
import os
import secrets
import stat
import warnings
from pathlib import Path
from typing import Any, Mapping, Optional, Union

import numpy as np

__all__ = ['SecretKey', 'KeySpec', 'WeakKeyWarning', 'resolve_key']

KEY_BYTES = 32
_FILE_HEADER = 'mmseg-keyprotect-key-v1'


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

    Raises:
        ValueError: if ``material`` is not 32 bytes long.
    """

    __slots__ = ('_material', '_source', '_fingerprint')

    def __init__(self, material: bytes, source: str = 'bytes') -> None:
        if not isinstance(material, (bytes, bytearray)):
            raise TypeError(f'key material must be bytes, got {type(material).__name__}')
        if len(material) != KEY_BYTES:
            raise ValueError(f'a key must be {KEY_BYTES} bytes long, got {len(material)} bytes')
        self._material = bytes(material)
        self._source = source
        self._fingerprint = hmac.new(self._material, b'mmseg-keyprotect/fingerprint',
                                     hashlib.sha256).hexdigest()[:16]

    # ------------------------------------------------------------------ sources
    @classmethod
    def generate(cls) -> 'SecretKey':
        """Make a new key from the operating system's secure random source."""
        return cls(secrets.token_bytes(KEY_BYTES), source='generated')

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike]) -> 'SecretKey':
        """Read a key file written by :meth:`save` or ``tools/keygen.py``.

        Args:
            path: the key file. It must not be readable or writable by group
                or others (like ssh private keys): ``chmod 600 PATH``.

        Raises:
            FileNotFoundError: if the file does not exist.
            PermissionError: if the file is readable by group/others or cannot be read.
            ValueError: if the file is not a key file or holds a key of the wrong length.
        """
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f'key file {str(path)!r} does not exist; '
                                    f'create one with `python tools/keygen.py {path}`')
        if not path.is_file():
            raise ValueError(f'key file {str(path)!r} is not a regular file')
        mode = stat.S_IMODE(path.stat().st_mode)
        if mode & 0o077:
            raise PermissionError(
                f'key file {str(path)!r} has permissions {mode:04o}, which let group or others '
                f'read it (world-readable key file); run `chmod 600 {path}`')
        try:
            text = path.read_text(encoding='ascii')
        except (OSError, UnicodeDecodeError) as err:
            raise PermissionError(f'key file {str(path)!r} cannot be read: '
                                  f'{type(err).__name__}') from None
        lines = [line.strip() for line in text.splitlines() if line.strip()]
        if len(lines) != 2 or lines[0] != _FILE_HEADER:
            raise ValueError(f'{str(path)!r} is not a mmseg-keyprotect key file '
                             f'(expected a {_FILE_HEADER!r} header line and one hex line)')
        return cls(_parse_hex(lines[1], f'key file {str(path)!r}'), source=f'file:{path.name}')

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
        return cls(_parse_hex(value, f'environment variable {name!r}'), source=f'env:{name}')

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
        return cls(material, source='seed')

    @classmethod
    def random(cls, rng: np.random.Generator) -> 'SecretKey':
        """Draw a key from ``rng``: for *incorrect* keys in evaluation, not for owners."""
        return cls(rng.bytes(KEY_BYTES), source='random')

    # ------------------------------------------------------------------ storage
    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
        """Write the key to ``path`` with mode 0600.

        Args:
            path: where to write. Parent folders are created.
            overwrite: replace an existing file. Defaults to False.

        Returns:
            Path: the written path.

        Raises:
            FileExistsError: if ``path`` exists and ``overwrite`` is False.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_WRONLY | os.O_CREAT | (os.O_TRUNC if overwrite else os.O_EXCL)
        try:
            fd = os.open(path, flags, 0o600)
        except FileExistsError:
            raise FileExistsError(f'key file {str(path)!r} already exists; refusing to '
                                  'overwrite a key (models trained with it would become '
                                  'unusable)') from None
        with os.fdopen(fd, 'w', encoding='ascii') as f:
            os.fchmod(f.fileno(), 0o600)
            f.write(f'{_FILE_HEADER}\n{self._material.hex()}\n')
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

    def __reduce__(self):
        # Dataloader workers (spawn) and DDP need the key; pickles stay in memory/pipes.
        return (SecretKey, (self._material, self._source))


KeySpec = Union[SecretKey, Mapping[str, Any]]


def resolve_key(spec: Optional[KeySpec], what: str = 'component') -> SecretKey:
    """Turn a key *source* from a config into a :class:`SecretKey`.

    Args:
        spec: a :class:`SecretKey`, or a dict with exactly one of
            ``file=PATH``, ``env=NAME`` or ``seed=INT``.
        what: the name of the component asking, for error messages.

    Returns:
        SecretKey: the resolved key.

    Raises:
        ValueError: if ``spec`` is missing or not one of the accepted forms.
    """
    if isinstance(spec, SecretKey):
        return spec
    if spec is None:
        raise ValueError(f'{what} needs a key: pass key=dict(file=PATH) (see tools/keygen.py), '
                         'key=dict(env=NAME) or, to reproduce the papers, key=dict(seed=INT)')
    if isinstance(spec, (str, bytes, bytearray)):
        raise ValueError(f'{what}: a key must be given by its source, '
                         'key=dict(file=PATH) or key=dict(env=NAME), not as a literal value')
    if isinstance(spec, Mapping):
        fields = set(spec) - {'type'}
        if spec.get('type', 'SecretKey') != 'SecretKey' or len(fields) != 1:
            raise ValueError(f'{what}: key source must have exactly one of file=, env=, seed=; '
                             f'got fields {sorted(fields)}')
        (field, value), = ((k, spec[k]) for k in fields)
        if field == 'file':
            return SecretKey.from_file(value)
        if field == 'env':
            return SecretKey.from_env(value)
        if field == 'seed':
            return SecretKey.from_seed(value)
        raise ValueError(f'{what}: unknown key source {field!r}; use file=, env= or seed=')
    raise ValueError(f'{what}: cannot make a key from a {type(spec).__name__}')


def _parse_hex(text: str, where: str) -> bytes:
    try:
        material = bytes.fromhex(text)
    except ValueError:
        raise ValueError(f'{where} does not hold a hex-encoded key') from None
    if len(material) != KEY_BYTES:
        raise ValueError(f'{where} holds a {len(material)}-byte key; '
                         f'expected {KEY_BYTES} bytes ({2 * KEY_BYTES} hex digits)')
    return material
