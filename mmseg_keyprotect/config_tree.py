"""A config as a tree: the one walker over its nodes, and where it keeps its parts.

Every pass over a config (finding key sources, keyed nodes, pretrained
weights, removing the protection) walks the same tree: mappings
(``Config``, ``ConfigDict``, dict) and sequences (list, tuple), each node
with its dotted path (``'train_dataloader.dataset.pipeline.3.key'``), the
container holding it and its field there.

Example:
    >>> cfg = dict(model=dict(type='M', layers=[dict(type='A'), dict(type='B')]))
    >>> [node.path for node in walk_config(cfg) if isinstance(node.value, dict)]
    ['', 'model', 'model.layers.0', 'model.layers.1']
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Iterator, Mapping, Optional

__all__ = ['ConfigNode', 'walk_config', 'config_root', 'thaw_tuples', 'DATALOADERS',
           'COMPONENT_FIELDS']

#: The dataloaders of a config, in the order a runner builds them.
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
#: The top-level fields of a config that build components (and so hold the keys in use).
COMPONENT_FIELDS = ('model', 'data_preprocessor') + DATALOADERS


@dataclass(frozen=True)
class ConfigNode:
    """One node of a config tree.

    Attributes:
        path: dotted path from the root (``''`` for the root itself).
        parent: the mapping or sequence holding it (None for the root).
        field: its key or index in ``parent`` (None for the root).
        value: the node.
    """

    path: str
    parent: Any
    field: Any
    value: Any


def config_root(cfg: Any) -> Any:
    """The plain dict behind an ``mmengine.Config`` (its top-level variables), else ``cfg``."""
    return getattr(cfg, '_cfg_dict', cfg)


def _children(value: Any) -> list:
    if isinstance(value, Mapping):
        return list(value.items())
    if isinstance(value, (list, tuple)):
        return list(enumerate(value))
    return []


def walk_config(cfg: Any, path: str = '',
                prune: Optional[Callable[[ConfigNode], bool]] = None) -> Iterator[ConfigNode]:
    """Every node of ``cfg``, the root first, parents before their children.

    The caller may replace the node it was just given in its parent
    (``node.parent[node.field] = new``): the walk then goes on into the new value.

    Args:
        cfg: a ``Config`` (its variables are walked), a mapping or a sequence.
        path: the path of ``cfg`` itself (prefixes every path).
        prune: a node for which this returns True is yielded but not entered.

    Yields:
        ConfigNode: path, parent, field and value of each node.
    """
    stack = [ConfigNode(path, None, None, config_root(cfg))]
    while stack:
        node = stack.pop()
        yield node
        if prune is not None and prune(node):
            continue
        value = node.value if node.parent is None else node.parent[node.field]
        stack.extend(reversed([
            ConfigNode(f'{node.path}.{field}' if node.path else str(field), value, field, child)
            for field, child in _children(value)]))


def thaw_tuples(cfg: Any, wanted: Callable[[ConfigNode], bool]) -> None:
    """Turn every tuple of ``cfg`` that holds a ``wanted`` node into a list, in place.

    So that those nodes can be replaced in their parent. Other tuples are kept.
    """
    holders = {id(node.parent) for node in walk_config(cfg) if wanted(node)}
    if not holders:
        return
    for node in walk_config(cfg):
        value = node.value if node.parent is None else node.parent[node.field]
        if isinstance(value, tuple) and node.parent is not None and \
                _holds(value, holders):
            node.parent[node.field] = list(value)


def _holds(value: Any, holders: set) -> bool:
    """Whether ``value`` or anything inside it is one of ``holders``."""
    return any(id(node.value) in holders for node in walk_config(value))
