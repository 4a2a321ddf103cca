"""Keyed types in a config: the registry of keyed config types and their roles.

A keyed part appears in a config as a node ``dict(type=NAME, ...)``. Its
:class:`KeyedType` role says how the attacker's view removes it and which
block size it imposes on image sizes. :func:`keyed_type` registers a class or
builder (subclasses and aliases are found through their bases).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Mapping, Optional, Tuple, TypeVar

from mmseg.registry import MODELS, TRANSFORMS

from ..config_tree import DATALOADERS, thaw_tuples, walk_config

__all__ = ['RemovedProtection', 'KeyedType', 'PipelineStep', 'PreprocessorCipher',
           'ProtectedSegmentor', 'ProtectedBuilder', 'Unsupported', 'KEYED_TYPES', 'keyed_type',
           'keyed_role', 'pipelines_of', 'config_pipelines', 'strip_protection', 'DATALOADERS']

T = TypeVar('T')



@dataclass
class RemovedProtection:
    """What :meth:`Protection.attacker_view` took out of a config (all of it non-secret).

    Attributes:
        points: the permutation points (paths relative to the segmentor).
        ciphers: the pipeline / preprocessor steps removed (their configs).
        encrypted_weights: whether the checkpoints were sealed.
    """

    points: List[Any] = field(default_factory=list)
    ciphers: List[Dict[str, Any]] = field(default_factory=list)
    encrypted_weights: bool = False

    @property
    def block_size(self) -> Optional[int]:
        """The block size of the block cipher(s), or None without one."""
        sizes = {c['block_size'] for c in self.ciphers if 'block_size' in c}
        if len(sizes) > 1:
            raise ValueError(f'ciphers with different block sizes {sorted(sizes)}')
        return sizes.pop() if sizes else None


class KeyedType:
    """How a registered keyed type appears in a config, and how the attacker removes it."""

    def strip(self, node: Dict[str, Any], removed: RemovedProtection, path: str) -> Any:
        """The config node without the protection (``node`` is a copy; edit it freely)."""
        raise NotImplementedError

    def block_size(self, node: Mapping[str, Any]) -> Optional[int]:
        """The block size the step needs image sizes to be multiples of (None: no constraint)."""
        return None


class PipelineStep(KeyedType):
    """A keyed transform in a data pipeline: the attacker's view drops it.

    Args:
        block_size_arg: the config argument holding its block size, if it has one.
    """

    def __init__(self, block_size_arg: Optional[str] = 'block_size') -> None:
        self.block_size_arg = block_size_arg

    def strip(self, node: Dict[str, Any], removed: RemovedProtection, path: str) -> Any:
        raise TypeError(f'{path}: a pipeline step is removed from its pipeline, not rewritten')

    def block_size(self, node: Mapping[str, Any]) -> Optional[int]:
        value = node.get(self.block_size_arg) if self.block_size_arg else None
        return value if isinstance(value, int) and not isinstance(value, bool) \
            and value >= 1 else None


class PreprocessorCipher(KeyedType):
    """A data preprocessor holding a keyed step in ``field``; the attacker's view uses ``plain``."""

    def __init__(self, plain: str = 'SegDataPreProcessor', field: str = 'cipher') -> None:
        self.plain, self.field = plain, field

    def strip(self, node: Dict[str, Any], removed: RemovedProtection, path: str) -> Any:
        removed.ciphers.append(dict(node.pop(self.field)))
        node['type'] = self.plain
        return node

    def block_size(self, node: Mapping[str, Any]) -> Optional[int]:
        inner = node.get(self.field)
        role = keyed_role(inner)
        return role.block_size(inner) if role is not None else None


class ProtectedSegmentor(KeyedType):
    """A segmentor with a ``protection`` argument; the attacker's view uses the ``plain`` type."""

    def __init__(self, plain: str, field: str = 'protection') -> None:
        self.plain, self.field = plain, field

    def strip(self, node: Dict[str, Any], removed: RemovedProtection, path: str) -> Any:
        protection = node.pop(self.field)
        removed.encrypted_weights |= bool(protection.get('encrypt_weights', False))
        points = protection.get('points') or []
        removed.points.extend(points if isinstance(points, (list, tuple)) else [points])
        node['type'] = self.plain
        return node

    def load_weights_as_stored(self, node: Dict[str, Any]) -> bool:
        """Turn ``encrypt_weights`` off in ``node`` (in place); True if it was on.

        A protection left without points becomes the ``plain`` type.
        """
        protection = node.get(self.field)
        if not (hasattr(protection, 'get') and protection.get('encrypt_weights')):
            return False
        protection['encrypt_weights'] = False
        protection.pop('allow_plaintext_weights', None)
        if not protection.get('points'):
            node['type'] = self.plain
            node.pop(self.field)
        return True


class ProtectedBuilder(KeyedType):
    """A builder wrapping a module config in ``inner`` with ``points``; the view unwraps it."""

    def __init__(self, inner: str) -> None:
        self.inner = inner

    def strip(self, node: Dict[str, Any], removed: RemovedProtection, path: str) -> Any:
        prefix = path.rsplit('.', 1)[-1] if path else ''
        points = node['points'] if isinstance(node['points'], (list, tuple)) \
            else [node['points']]
        removed.points.extend(f'{prefix}.{p}' if isinstance(p, str) and prefix else p
                              for p in points)
        return node[self.inner]


class Unsupported(KeyedType):
    """A keyed type the attacker's view cannot remove (says what to use instead)."""

    def __init__(self, advice: str) -> None:
        self.advice = advice

    def strip(self, node: Dict[str, Any], removed: RemovedProtection, path: str) -> Any:
        raise NotImplementedError(f'{path}: {node.get("type")} cannot be removed by the '
                                  f'attacker\'s view; {self.advice}')


#: Registered type name -> its role in a config.
KEYED_TYPES: Dict[str, KeyedType] = {}


def keyed_type(role: KeyedType, name: Optional[str] = None) -> Callable[[T], T]:
    """Decorator: register a class or builder function as a keyed config type.

    Subclasses (and aliases registered in mmseg under another name) are found
    through their bases, so registering a base class covers its family.

    Args:
        role: how it appears in a config (:class:`PipelineStep`,
            :class:`PreprocessorCipher`, :class:`ProtectedSegmentor`,
            :class:`ProtectedBuilder`, :class:`Unsupported`).
        name: the type name; defaults to ``__name__``.
    """
    def register(obj: T) -> T:
        KEYED_TYPES[name or obj.__name__] = role
        return obj
    return register


def keyed_role(node: Any) -> Optional[KeyedType]:
    """The :class:`KeyedType` of a config node (``dict(type=...)``), or None."""
    if not isinstance(node, Mapping) or not isinstance(node.get('type'), str):
        return None
    kind = node['type']
    if kind in KEYED_TYPES:
        return KEYED_TYPES[kind]
    for registry in (TRANSFORMS, MODELS):
        try:
            obj = registry.get(kind)
        except (KeyError, ImportError):
            obj = None
        if isinstance(obj, type):
            for base in obj.__mro__:
                if base.__name__ in KEYED_TYPES:
                    return KEYED_TYPES[base.__name__]
    return None


def pipelines_of(dataset: Any, where: str) -> Iterator[Tuple[str, List[Any]]]:
    """Every ``pipeline`` list inside a dataset config (wrapped datasets included)."""
    if isinstance(dataset, Mapping):
        pipeline = dataset.get('pipeline')
        if isinstance(pipeline, list):
            yield where, pipeline
        for name in ('dataset', 'datasets'):
            if name in dataset:
                yield from pipelines_of(dataset[name], f'{where}.{name}')
    elif isinstance(dataset, (list, tuple)):
        for i, item in enumerate(dataset):
            yield from pipelines_of(item, f'{where}.{i}')


def config_pipelines(cfg: Mapping[str, Any]) -> Iterator[Tuple[str, str, List[Any]]]:
    """``(loader, where, pipeline)`` for every pipeline of every dataloader of ``cfg``."""
    for loader in DATALOADERS:
        dataset = (cfg.get(loader) or {}).get('dataset')
        for where, pipeline in pipelines_of(dataset, f'{loader}.dataset'):
            yield loader, where, pipeline


def _strippable(node: Any) -> bool:
    """Whether ``node`` is a keyed node that is rewritten (not removed from a pipeline)."""
    role = keyed_role(node)
    return role is not None and not isinstance(role, PipelineStep)


def _strip(node: Any, removed: RemovedProtection, path: str) -> Any:
    """``node`` rewritten by its role until it is no strippable keyed node (a builder
    unwraps to its inner module, which may be keyed itself)."""
    while _strippable(node):
        node = keyed_role(node).strip(node, removed, path)
    return node


def strip_protection(node: Any, removed: RemovedProtection, path: str) -> Any:
    """A plain copy of ``node`` with every registered keyed type removed.

    Pipeline steps are left where they are (they leave their pipelines).
    """
    tree = copy.deepcopy(node)
    thaw_tuples(tree, lambda n: _strippable(n.value))
    tree = _strip(tree, removed, path)
    for item in walk_config(tree, path):
        if item.parent is not None and _strippable(item.value):
            item.parent[item.field] = _strip(item.value, removed, item.path)
    return tree
