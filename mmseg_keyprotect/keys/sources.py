"""Key sources: the one definition of how a config names a key, resolved and redacted.

Configs name where a key comes from, never the key itself:
``key=dict(file=PATH)`` (optionally ``allow_group_read=True``),
``key=dict(env=NAME)`` or, to reproduce the papers only,
``key=dict(seed=INT, published=True)``. A config may hold them in as many places
as it has keyed parts (the model's ``protection``, ciphers in every pipeline, a
cipher data preprocessor, a top-level ``key`` variable); the functions here walk
the *whole* config (:func:`~mmseg_keyprotect.config_tree.walk_config`) for ``key``
fields holding a source, so callers need not know where a config keeps its keys:

* :func:`parse_source` validates one source (the only place that does);
  :func:`is_key_source` and :func:`resolve_key` build on it;
* :func:`key_from` takes what a user hands the API (a key, a key file path or a
  source) and gives the key;
* :func:`find_key_sources` lists them with their config paths;
* :func:`resolve_key_sources` reads every distinct source once (errors name the
  config path and the file or variable) and puts the resolved key in its place;
* :func:`replace_key_sources` puts one key (or source) everywhere;
* :func:`redact_key_sources` removes what a source says about the key itself
  (a seed; a resolved key) before a config is written to a run's files.

A resolved :class:`SecretKey` in a config prints as its fingerprint, so a dumped
config still holds no key material.

Example:
    >>> cfg = Config.fromfile('configs/demo/fcn_r18-d8_shf-b2_demo.py')  # doctest: +SKIP
    >>> replace_key_sources(cfg, SecretKey.from_file('owner.key'))  # doctest: +SKIP
    ['cipher.key', 'key', 'test_dataloader.dataset.pipeline.3.key', ...]
"""
from __future__ import annotations

import os
from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple, Union

from ..config_tree import COMPONENT_FIELDS, ConfigNode, config_root, thaw_tuples, walk_config
from .secret import SecretKey

__all__ = ['KeySpec', 'KeyLike', 'SOURCE_FIELDS', 'REDACTED', 'COMPONENT_FIELDS', 'parse_source',
           'is_key_source', 'resolve_key', 'key_from', 'find_key_sources', 'replace_key_sources',
           'resolve_key_sources', 'redact_key_sources']

KeySpec = Union[SecretKey, Mapping[str, Any]]
#: What a user may hand the API as a key: a key, a key file path or a key source.
KeyLike = Union[SecretKey, str, os.PathLike, Mapping[str, Any]]

#: Each key source field and the optional fields it takes.
SOURCE_FIELDS: Dict[str, tuple] = {
    'file': ('allow_group_read', ), 'env': (), 'seed': ('published', )}
#: What :func:`redact_key_sources` puts in place of a seed.
REDACTED = '<redacted>'


def parse_source(spec: Any, what: str = 'component') -> Tuple[str, Any]:
    """``(field, value)`` of a key source dict, e.g. ``('file', 'owner.key')``.

    Args:
        spec: the source: a dict with exactly one of ``file=``, ``env=``,
            ``seed=``, the optional fields that source takes
            (:data:`SOURCE_FIELDS`) and optionally ``type='SecretKey'``.
        what: who asks, for error messages.

    Raises:
        ValueError: if ``spec`` is missing or not one of the accepted forms.
    """
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
    return field, spec[field]


def is_key_source(value: Any) -> bool:
    """Whether ``value`` is a key as configs give it: a :class:`SecretKey` or a
    source dict that :func:`parse_source` accepts."""
    if isinstance(value, SecretKey):
        return True
    try:
        parse_source(value)
    except ValueError:
        return False
    return True


def resolve_key(spec: Optional[KeySpec], what: str = 'component') -> SecretKey:
    """Turn a key *source* from a config into a :class:`SecretKey`.

    Args:
        spec: a :class:`SecretKey`, or a source dict (:func:`parse_source`);
            a seed is accepted only with ``published=True`` (a seed is a
            published key: anyone can find it by trying seeds).
        what: the name of the component asking, for error messages.

    Raises:
        ValueError: if ``spec`` is missing or not one of the accepted forms,
            a seed is given without ``published=True``, or the source was
            redacted (a config dumped by a run).
        FileNotFoundError, PermissionError, KeyError: the file or variable
            cannot be read (:meth:`SecretKey.from_file`, :meth:`SecretKey.from_env`).
    """
    if isinstance(spec, SecretKey):
        return spec
    field, value = parse_source(spec, what)
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


def key_from(key: KeyLike, what: str = 'key') -> SecretKey:
    """The key a user hands the API: a :class:`SecretKey`, a key file path or a source dict.

    Raises:
        ValueError: ``key`` is none of these, or as :func:`resolve_key`.
        FileNotFoundError, PermissionError, KeyError: as :func:`resolve_key`.
    """
    if isinstance(key, (str, os.PathLike)):
        return resolve_key({'file': os.fspath(key)}, what)
    if isinstance(key, SecretKey) or isinstance(key, Mapping):
        return resolve_key(key, what)
    raise ValueError(f'{what} must be a SecretKey, a key file path or a key source dict '
                     f'(file=, env=), got {type(key).__name__}')


def _is_key_field(node: ConfigNode) -> bool:
    return node.field == 'key' and is_key_source(node.value)


def _key_fields(cfg: Any) -> List[ConfigNode]:
    """Every ``key`` field of ``cfg`` that holds a key source, in config order."""
    root = config_root(cfg)
    return [node for node in walk_config(root, prune=_is_key_field) if _is_key_field(node)]


def find_key_sources(cfg: Any) -> List[Tuple[str, KeySpec]]:
    """Every ``key`` field of ``cfg`` that holds a key source, with its dotted path.

    Args:
        cfg: an ``mmengine.Config``, ``ConfigDict`` or plain dict.

    Returns:
        list[tuple[str, KeySpec]]: ``(path, source)`` in config order, e.g.
        ``('model.protection.key', {'file': 'work_dirs/owner.key'})``.
    """
    return [(node.path, node.value) for node in _key_fields(cfg)]


def _replaceable_key_fields(cfg: Any) -> List[ConfigNode]:
    """The key fields of ``cfg``, tuples holding them turned into lists first."""
    thaw_tuples(config_root(cfg), _is_key_field)
    fields = _key_fields(cfg)
    for node in fields:
        if not isinstance(node.parent, MutableMapping):
            raise TypeError(f'cannot replace a key source inside a {type(node.parent).__name__}')
    return fields


def replace_key_sources(cfg: Any, key: KeySpec) -> List[str]:
    """Put ``key`` in every ``key`` field of ``cfg`` that holds a key source, in place.

    Args:
        cfg: an ``mmengine.Config``, ``ConfigDict`` or plain dict; key sources
            inside tuples are replaced by rebuilding the tuple as a list.
        key: a :class:`SecretKey` or a key source dict.

    Returns:
        list[str]: the dotted paths that were replaced (empty: the config has no key).
    """
    if not is_key_source(key):
        raise ValueError('replace_key_sources needs a SecretKey or a key source dict '
                         '(file=, env= or seed=)')
    paths = []
    for node in _replaceable_key_fields(cfg):
        node.parent[node.field] = key
        paths.append(node.path)
    return paths


def resolve_key_sources(cfg: Any, fields: Optional[Sequence[str]] = None
                        ) -> Dict[str, SecretKey]:
    """Resolve every key source of ``cfg`` (each distinct source read once), in place.

    Args:
        cfg: an ``mmengine.Config``, ``ConfigDict`` or plain dict.
        fields: only the sources under these top-level fields (e.g.
            :data:`COMPONENT_FIELDS`: the keys the built model and data use, not a
            leftover top-level ``key`` variable of a base config). Default: all.

    Returns:
        dict[str, SecretKey]: config path -> the key now at that path.

    Raises:
        FileNotFoundError, PermissionError, KeyError, ValueError: from
            :func:`resolve_key`, the message prefixed with the config path of the
            source (never with key material).
    """
    resolved: Dict[str, SecretKey] = {}
    cache: Dict[Any, SecretKey] = {}
    for node in _replaceable_key_fields(cfg):
        if fields is not None and node.path.split('.')[0] not in fields:
            continue
        spec = node.value
        ident = repr(sorted(dict(spec).items())) if isinstance(spec, Mapping) else id(spec)
        if ident not in cache:
            try:
                cache[ident] = resolve_key(spec, node.path)
            except (OSError, KeyError, ValueError) as err:
                message = err.args[0] if err.args else str(err)
                raise type(err)(f'{node.path}: {message}') from None
        node.parent[node.field] = cache[ident]
        resolved[node.path] = cache[ident]
    return resolved


def redact_key_sources(cfg: Any) -> List[str]:
    """Remove what a config's key sources say about the key itself, in place.

    A seed is the key (``dict(seed=N, published=True)`` becomes
    ``dict(seed='<redacted>', published=True)``) and a resolved
    :class:`SecretKey` becomes ``dict(redacted=FINGERPRINT)``. A file path or an
    environment variable's name is kept: it says where the key is, not what
    it is, so a dumped config can still be run by the key's owner.

    Args:
        cfg: an ``mmengine.Config``, ``ConfigDict`` or plain dict.

    Returns:
        list[str]: the dotted paths that were redacted.
    """
    paths = []
    for node in _replaceable_key_fields(cfg):
        value = node.value
        if isinstance(value, SecretKey):
            node.parent[node.field] = {'redacted': value.fingerprint}
        elif 'seed' in value and value['seed'] != REDACTED:
            node.parent[node.field] = {**value, 'seed': REDACTED}
        else:
            continue
        paths.append(node.path)
    return paths
