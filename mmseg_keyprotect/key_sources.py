"""Key sources inside a config: find them, resolve them, replace them.

Configs name where a key comes from (``key=dict(file=...)``, ``key=dict(env=...)``,
``key=dict(seed=...)``) in as many places as there are keyed components: the model's
``protection``, cipher transforms in every pipeline, a cipher data preprocessor, a
top-level ``key`` variable. The functions here walk the *whole* config for ``key``
fields holding a key source, so callers (``tools/infer.py``, notebooks) need not know
where a given config keeps its keys:

* :func:`find_key_sources` lists them with their config paths;
* :func:`resolve_key_sources` reads every distinct source once (errors name the
  config path and the file or variable) and puts the resolved key in its place;
* :func:`replace_key_sources` puts one key (or source) everywhere, e.g. the key of
  ``--key FILE`` or a throw-away key to build a model that will run *plain*.

All of them act before anything is built. A resolved :class:`SecretKey` in a config
prints as its fingerprint, so a dumped config still holds no key material.

Example:
    >>> cfg = Config.fromfile('configs/demo/fcn_r18-d8_shf-b2_demo.py')  # doctest: +SKIP
    >>> replace_key_sources(cfg, SecretKey.from_file('owner.key'))  # doctest: +SKIP
    ['cipher.key', 'key', 'test_dataloader.dataset.pipeline.3.key', ...]
"""
from __future__ import annotations

from typing import Any, Dict, List, Mapping, MutableMapping, Optional, Sequence, Tuple

from .keys import REDACTED, SOURCE_FIELDS, KeySpec, SecretKey, resolve_key

__all__ = ['is_key_source', 'find_key_sources', 'replace_key_sources', 'resolve_key_sources',
           'redact_key_sources', 'COMPONENT_FIELDS']


def is_key_source(value: Any) -> bool:
    """Whether ``value`` is a key as configs give it: a :class:`SecretKey` or a
    dict with exactly one of ``file=``, ``env=``, ``seed=``, the optional fields
    that source takes (:data:`~mmseg_keyprotect.keys.SOURCE_FIELDS`) and
    optionally ``type='SecretKey'``."""
    if isinstance(value, SecretKey):
        return True
    if not isinstance(value, Mapping) or value.get('type', 'SecretKey') != 'SecretKey':
        return False
    fields = set(value) - {'type'}
    primary = fields & set(SOURCE_FIELDS)
    return len(primary) == 1 and fields <= primary | set(SOURCE_FIELDS[next(iter(primary))])


def _root(cfg: Any) -> Any:
    """The plain dict behind an ``mmengine.Config`` (its top-level variables)."""
    return getattr(cfg, '_cfg_dict', cfg)


def _walk(node: Any, path: str):
    """Yield ``(path, container, field)`` for every ``key`` field holding a key source."""
    if isinstance(node, Mapping):
        for field, value in node.items():
            where = f'{path}.{field}' if path else str(field)
            if field == 'key' and is_key_source(value):
                yield where, node, field
            else:
                yield from _walk(value, where)
    elif isinstance(node, (list, tuple)):
        for i, value in enumerate(node):
            yield from _walk(value, f'{path}.{i}' if path else str(i))


def find_key_sources(cfg: Any) -> List[Tuple[str, KeySpec]]:
    """Every ``key`` field of ``cfg`` that holds a key source, with its dotted path.

    Args:
        cfg: an ``mmengine.Config``, ``ConfigDict`` or plain dict.

    Returns:
        list[tuple[str, KeySpec]]: ``(path, source)`` in config order, e.g.
        ``('model.protection.key', {'file': 'work_dirs/owner.key'})``.
    """
    return [(path, container[field]) for path, container, field in _walk(_root(cfg), '')]


def _set(container: Any, field: Any, value: Any) -> None:
    if not isinstance(container, MutableMapping):
        raise TypeError(f'cannot replace a key source inside a {type(container).__name__}')
    container[field] = value


def replace_key_sources(cfg: Any, key: KeySpec) -> List[str]:
    """Put ``key`` in every ``key`` field of ``cfg`` that holds a key source, in place.

    Args:
        cfg: an ``mmengine.Config``, ``ConfigDict`` or plain dict; key sources
            inside tuples are replaced by rebuilding the tuple.
        key: a :class:`SecretKey` or a key source dict.

    Returns:
        list[str]: the dotted paths that were replaced (empty: the config has no key).
    """
    if not is_key_source(key):
        raise ValueError('replace_key_sources needs a SecretKey or a key source dict '
                         '(file=, env= or seed=)')
    root = _root(cfg)
    _thaw_tuples(root)
    paths = []
    for path, container, field in list(_walk(root, '')):
        _set(container, field, key)
        paths.append(path)
    return paths


#: The top-level fields of a config that hold built components (and so keys in use).
COMPONENT_FIELDS = ('model', 'data_preprocessor', 'train_dataloader', 'val_dataloader',
                    'test_dataloader')


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
            :func:`~mmseg_keyprotect.keys.resolve_key`, the message prefixed with
            the config path of the source (never with key material).
    """
    root = _root(cfg)
    _thaw_tuples(root)
    resolved: Dict[str, SecretKey] = {}
    cache: Dict[str, SecretKey] = {}
    for path, container, field in list(_walk(root, '')):
        if fields is not None and path.split('.')[0] not in fields:
            continue
        spec = container[field]
        ident = repr(sorted(dict(spec).items())) if isinstance(spec, Mapping) else id(spec)
        if ident not in cache:
            try:
                cache[ident] = resolve_key(spec, path)
            except (OSError, KeyError, ValueError) as err:
                message = err.args[0] if err.args else str(err)
                raise type(err)(f'{path}: {message}') from None
        _set(container, field, cache[ident])
        resolved[path] = cache[ident]
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
    root = _root(cfg)
    _thaw_tuples(root)
    paths = []
    for path, container, field in list(_walk(root, '')):
        value = container[field]
        if isinstance(value, SecretKey):
            _set(container, field, {'redacted': value.fingerprint})
        elif 'seed' in value and value['seed'] != REDACTED:
            _set(container, field, {**value, 'seed': REDACTED})
        else:
            continue
        paths.append(path)
    return paths


def _thaw_tuples(node: Any) -> None:
    """Turn tuples that contain key sources into lists, so their sources can be replaced."""
    items = node.items() if isinstance(node, Mapping) else \
        enumerate(node) if isinstance(node, list) else ()
    for field, value in list(items):
        if isinstance(value, tuple) and any(True for _ in _walk(value, '')):
            value = list(value)
            node[field] = value
        _thaw_tuples(value)
