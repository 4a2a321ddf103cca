"""The secret key: its value, where it was read from, and what is derived from it.

A :class:`SecretKey` is 32 random bytes. Everything keyed (permutations, masks,
the FFX password) is *derived* from it with HMAC-SHA256 under a purpose string,
so different purposes never share a stream and the same key gives the same
result in every process, rank and platform. Derived permutations and masks
depend only on :mod:`hashlib` and a stable sort, not on the random number
generators of numpy or torch, so they are identical across versions.

A key pickles according to how it was made, never by its bytes unless it is
no secret: one read from a file or an environment variable (or a published
seed) pickles as that origin and is read again where it is unpickled; a
:meth:`~SecretKey.random` key of the evaluation (``public=True``) pickles as
itself; any other key refuses to be pickled.

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
import warnings
from pathlib import Path
from typing import Any, Dict, Optional, Tuple, Union

import numpy as np

from .keyfile import KEY_BYTES, parse_hex, read_key_file, write_key_file

__all__ = ['SecretKey', 'WeakKeyWarning']

# How a key is read again where it is unpickled: (SecretKey class method, its arguments).
_Origin = Tuple[str, Tuple[Any, ...]]
_REOPENERS = ('from_file', 'from_env', 'from_seed')


class WeakKeyWarning(UserWarning):
    """A key was made from a small integer seed and can be found by search."""


class SecretKey:
    """A 256-bit secret key with keyed derivations.

    Never construct from a literal in a config; use :meth:`generate`,
    :meth:`from_file`, :meth:`from_env` or
    :func:`~mmseg_keyprotect.keys.resolve_key`.

    Args:
        material (bytes): exactly 32 bytes of key material.
        source (str): a human-readable, non-secret description of where the
            key came from (shown in ``repr``). Defaults to ``'bytes'``.
        public (bool): the key is no secret (an incorrect key of the
            evaluation): it pickles with its bytes. Defaults to False: the key
            pickles only if it was read from a source (:meth:`from_file`,
            :meth:`from_env`, :meth:`from_seed`), as that source.

    Raises:
        ValueError: if ``material`` is not 32 bytes long.
    """

    __slots__ = ('_material', '_source', '_fingerprint', '_origin', '_public')

    def __init__(self, material: bytes, source: str = 'bytes', public: bool = False) -> None:
        if not isinstance(material, (bytes, bytearray)):
            raise TypeError(f'key material must be bytes, got {type(material).__name__}')
        if len(material) != KEY_BYTES:
            raise ValueError(f'a key must be {KEY_BYTES} bytes long, got {len(material)} bytes')
        self._material = bytes(material)
        self._source = source
        self._public = bool(public)
        self._origin: Optional[_Origin] = None
        self._fingerprint = hmac.new(self._material, b'mmseg-keyprotect/fingerprint',
                                     hashlib.sha256).hexdigest()[:16]

    def _read_from(self, method: str, *args: Any) -> 'SecretKey':
        """Remember the class method (and arguments) that gives this key again."""
        self._origin = (method, args)
        return self

    # ------------------------------------------------------------------ sources
    @classmethod
    def generate(cls) -> 'SecretKey':
        """Make a new key from the operating system's secure random source."""
        return cls(secrets.token_bytes(KEY_BYTES), source='generated')

    @classmethod
    def from_file(cls, path: Union[str, os.PathLike],
                  allow_group_read: bool = False) -> 'SecretKey':
        """Read a key file written by :meth:`save` or ``tools/keygen.py``.

        See :func:`~mmseg_keyprotect.keys.keyfile.read_key_file` for the
        checks: a regular file of the current user, mode 0600 (0640 with
        ``allow_group_read``), no symbolic link, no FIFO or device.

        Raises:
            FileNotFoundError, PermissionError, ValueError: as ``read_key_file``.
        """
        material = read_key_file(path, allow_group_read)
        return cls(material, source=f'file:{Path(path).name}')._read_from(
            'from_file', os.path.abspath(path), bool(allow_group_read))

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
        return cls(parse_hex(value, f'environment variable {name!r}'),
                   source=f'env:{name}')._read_from('from_env', name)

    @classmethod
    def from_seed(cls, seed: int) -> 'SecretKey':
        """Make a key from an integer seed, for reproducing the papers only.

        The key space is the seed space: anyone can find a small seed by trying
        seeds (:attr:`published` is True). Emits :class:`WeakKeyWarning`.
        """
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
            raise TypeError(f'seed must be an int, got {type(seed).__name__}')
        warnings.warn(
            'SecretKey.from_seed makes a low-entropy key that can be recovered by '
            'searching seeds; use it only to reproduce the papers (tools/keygen.py '
            'makes a real key)', WeakKeyWarning, stacklevel=2)
        material = hashlib.sha256(b'mmseg-keyprotect/seed/' + str(int(seed)).encode()).digest()
        return cls(material, source='seed')._read_from('from_seed', int(seed))

    @classmethod
    def random(cls, rng: np.random.Generator) -> 'SecretKey':
        """Draw a public key from ``rng``: for *incorrect* keys in evaluation, not for owners."""
        return cls(rng.bytes(KEY_BYTES), source='random', public=True)

    # ------------------------------------------------------------------ storage
    def save(self, path: Union[str, os.PathLike], overwrite: bool = False) -> Path:
        """Write the key to ``path`` with mode 0600, atomically
        (:func:`~mmseg_keyprotect.keys.keyfile.write_key_file`).

        Raises:
            FileExistsError: if ``path`` exists and ``overwrite`` is False.
        """
        return write_key_file(path, self._material, overwrite)

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
        """Where the key came from, for display: ``'file:NAME'``, ``'env:NAME'``, ``'seed'`` ..."""
        return self._source

    @property
    def published(self) -> bool:
        """Whether anyone can know the key: made from a seed, or a public key of the evaluation."""
        return self._public or (self._origin is not None and self._origin[0] == 'from_seed')

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
        """Pickle the key as how it was made, never its secret material.

        A key read from a file or an environment variable (or a published
        seed) pickles as that origin and is read again where it is unpickled
        (a dataloader worker started with ``spawn``, another rank), which
        checks that it gives the same fingerprint. A public key (``public=True``:
        the random wrong keys of the evaluation) pickles as itself. Any other
        key (``generate()``, raw bytes) refuses to be pickled.

        Raises:
            TypeError: for a secret key that was not read from a source.
        """
        if self._public:
            return (_public_key, (self._material, self._source))
        if self._origin is None:
            raise TypeError(
                f'{self!r} cannot be pickled: it has no key source to read it from again, and '
                'mmseg-keyprotect never writes key material into a pickle. Give the key as a '
                "source (key=dict(file=PATH) or key=dict(env=NAME)), or keep the object in "
                'this process')
        return (_reopen, (self._origin, self._fingerprint))


def _public_key(material: bytes, source: str) -> SecretKey:
    """Unpickle a public key."""
    return SecretKey(material, source, public=True)


def _reopen(origin: _Origin, fingerprint: str) -> SecretKey:
    """Unpickle a key: read it again from its origin and check it is still the same key."""
    method, args = origin
    if method not in _REOPENERS:
        raise ValueError(f'a pickled key cannot be read with SecretKey.{method}')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', WeakKeyWarning)
        key = getattr(SecretKey, method)(*args)
    if key.fingerprint != fingerprint:
        raise ValueError(f'the key source {key.source!r} now gives the key of fingerprint '
                         f'{key.fingerprint}, but the pickled key had fingerprint {fingerprint}')
    return key
