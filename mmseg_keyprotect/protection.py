"""The protection of a model: one object that knows every keyed part.

A protected run has keyed parts in several places: block ciphers in the data
pipelines or in the data preprocessor, channel permutations at points of the
network, weight encryption of the checkpoints. :class:`Protection` gathers
them, from a runner, a model (and its dataloaders/pipelines) or a config, and
is the one place that

* **describes** them (:meth:`Protection.describe`: the non-secret descriptor
  stored in checkpoint meta and reports);
* **switches key conditions** (:meth:`Protection.applied`: correct, plain, an
  incorrect key or a candidate key, restored on exit);
* **draws incorrect keys** whose derived tables all differ
  (:meth:`Protection.incorrect_keys`);
* gives the **attacker's view** of the config (:meth:`Protection.attacker_view`:
  the protection removed);
* **checks sizes** of the config against block sizes
  (:meth:`Protection.check_sizes`).

Built objects are found by type: every
:class:`~mmseg_keyprotect.keyed.KeyedComponent` reachable from the targets
(also one held as a plain attribute of a module, like weight encryption).
Config entries are found through :data:`KEYED_TYPES`: a registered type name
and the :class:`KeyedType` role that says how the attacker's view removes it.
A new kind of keyed part is one :func:`keyed_type` decorator next to its
registration in mmseg's registry::

    @TRANSFORMS.register_module()
    @keyed_type(PipelineStep())
    class MyKeyedTransform(BaseTransform, KeyedComponent):
        ...

Everything here is non-secret: a descriptor holds key fingerprints only.
"""
from __future__ import annotations

import contextlib
import copy
from dataclasses import dataclass, field
from typing import (Any, Callable, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple,
                    TypeVar, Union)

from mmseg.registry import MODELS, TRANSFORMS
from torch import nn

from .evaluation.conditions import KeyCondition, condition_list, draw_incorrect_keys
from .keyed import KeyedComponent
from .keys import SecretKey

__all__ = [
    'Protection', 'Descriptor', 'KeyedType', 'PipelineStep', 'PreprocessorCipher',
    'ProtectedSegmentor', 'ProtectedBuilder', 'Unsupported', 'KEYED_TYPES', 'keyed_type',
    'keyed_role', 'RemovedProtection', 'ProtectionMismatchError', 'KeyMismatchError',
    'format_protection', 'check_protection', 'check_key_fingerprints', 'find_keyed_parts',
    'walk_containers', 'DATALOADERS', 'pipelines_of'
]

Descriptor = List[Dict[str, Any]]
T = TypeVar('T')

#: The dataloaders of a config, in the order a runner builds them.
DATALOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
# Attributes through which datasets, dataloaders and pipelines hold their transforms.
_CONTAINER_ATTRS = ('dataset', 'datasets', 'pipeline', 'transforms', 'subroutines')
# Transforms that fix the image size the next steps see: type -> size argument.
_SIZED_TRANSFORMS = {'RandomCrop': 'crop_size', 'Pad': 'size', 'Resize': 'scale'}


class ProtectionMismatchError(ValueError):
    """A checkpoint's stored protection differs from the protection of the config."""


class KeyMismatchError(ProtectionMismatchError):
    """The key given for a checkpoint is not the key it was trained with."""


# ------------------------------------------------------------------ config-side registry
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


def _config_pipelines(cfg: Mapping[str, Any]) -> Iterator[Tuple[str, str, List[Any]]]:
    """``(loader, where, pipeline)`` for every pipeline of every dataloader of ``cfg``."""
    for loader in DATALOADERS:
        dataset = (cfg.get(loader) or {}).get('dataset')
        for where, pipeline in pipelines_of(dataset, f'{loader}.dataset'):
            yield loader, where, pipeline


# -------------------------------------------------------------------- built-object side
def walk_containers(*targets: Any) -> Iterator[Any]:
    """Every object reachable from ``targets`` through data containers, each once.

    Follows lists/tuples and the attributes through which dataloaders,
    (wrapped) datasets and pipelines hold each other (``dataset``,
    ``datasets``, ``pipeline``, ``transforms``, ``subroutines``). Modules
    are yielded with all their submodules, and the keyed components a module
    holds as plain attributes (weight encryption); keyed components are not entered.
    """
    seen = set()
    stack = list(reversed(targets))
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            for module in obj.modules():
                if id(module) in seen and module is not obj:
                    continue
                seen.add(id(module))
                yield module
                if not isinstance(module, KeyedComponent):
                    held = [v for v in vars(module).values()
                            if isinstance(v, KeyedComponent) and not isinstance(v, nn.Module)]
                    stack.extend(reversed(held))
            continue
        yield obj
        if isinstance(obj, KeyedComponent):
            continue
        if isinstance(obj, (list, tuple)):
            stack.extend(reversed(obj))
            continue
        state = getattr(obj, '__dict__', {})
        stack.extend(reversed([state[attr] for attr in _CONTAINER_ATTRS if attr in state]))


def find_keyed_parts(*targets: Any) -> List[KeyedComponent]:
    """Every keyed component reachable from ``targets``, each once, in a stable order."""
    return [obj for obj in walk_containers(*targets) if isinstance(obj, KeyedComponent)]


ConditionLike = Union[KeyCondition, str, SecretKey, None]


def _key_chooser(condition: ConditionLike) -> Callable[[KeyedComponent], Optional[SecretKey]]:
    if isinstance(condition, KeyCondition):
        return condition.key_for
    if condition in ('correct', 'plain'):
        return KeyCondition(condition).key_for
    if condition is None:
        return lambda part: None
    if isinstance(condition, SecretKey):
        # A candidate key (a key search): used as given, even if it is the correct key.
        return lambda part: condition
    raise ValueError(f"a key condition is a KeyCondition, 'correct', 'plain', a SecretKey or "
                     f'None, got {condition!r}')


class Protection:
    """Every keyed part of a model and its data, and the config they were built from.

    Build it with :meth:`of` (built objects), :meth:`from_config` (a config,
    nothing built) or :meth:`from_runner` (the runner's model, the dataloaders
    of its built loops and its config).

    Args:
        *targets: models (``nn.Module``, DDP-wrapped too), dataloaders,
            datasets, pipelines or keyed components.
        cfg: the config, for the config-side views (:meth:`attacker_view`,
            :meth:`check_sizes`).
    """

    def __init__(self, *targets: Any, cfg: Optional[Mapping[str, Any]] = None) -> None:
        self.targets = targets
        self.cfg = cfg

    @classmethod
    def of(cls, *targets: Any) -> 'Protection':
        """The protection of built models, dataloaders, datasets or pipelines."""
        return cls(*targets)

    @classmethod
    def from_config(cls, cfg: Mapping[str, Any]) -> 'Protection':
        """The protection a config describes (nothing is built)."""
        return cls(cfg=cfg)

    @classmethod
    def from_runner(cls, runner: Any) -> 'Protection':
        """The runner's model, the dataloaders of its built loops, and its config."""
        from mmengine.runner import BaseLoop
        # The loops the runner has built (unbuilt ones are still config dicts).
        loops = (getattr(runner, name, None) for name in ('_train_loop', '_val_loop',
                                                          '_test_loop'))
        loaders = [loop.dataloader for loop in loops if isinstance(loop, BaseLoop)]
        return cls(runner.model, *loaders, cfg=getattr(runner, 'cfg', None))

    # ------------------------------------------------------------------ built parts
    @property
    def parts(self) -> List[KeyedComponent]:
        """Every keyed part of the targets (found afresh, so a rebuilt loader counts)."""
        return find_keyed_parts(*self.targets)

    def __bool__(self) -> bool:
        return bool(self.parts) or (self.cfg is not None and bool(self._config_nodes()))

    def describe(self) -> Descriptor:
        """The non-secret descriptor: one entry per distinct part, sorted.

        ``{'type': 'BlockShuffle', 'block_size': 2, 'key': FINGERPRINT}``,
        ``{'type': 'PointPermutation', 'point': ..., 'key': ...}``,
        ``{'type': 'WeightEncryption', 'key': ...}``. Parts that give the
        model the same inputs (a cipher in two pipelines, or in the pipeline
        and the preprocessor) describe themselves alike and are listed once.
        """
        entries = {tuple(sorted(part.describe().items())) for part in self.parts}
        return [dict(entry) for entry in sorted(entries, key=repr)]

    @property
    def fingerprints(self) -> List[str]:
        """The fingerprints of the correct keys of every part, sorted."""
        return sorted({part.correct_key.fingerprint for part in self.parts})

    @contextlib.contextmanager
    def applied(self, condition: ConditionLike) -> Iterator[List[KeyedComponent]]:
        """Give every part the key of ``condition``; restore the previous keys on exit.

        Args:
            condition: a :class:`KeyCondition`, ``'correct'``, ``'plain'``
                (or None), or a :class:`SecretKey` used by every part as given
                (a candidate in a key search, which may be the correct key).

        Dataloader workers hold their own copy of the pipeline: switch before
        an iterator (and its workers) is created, and restart persistent
        workers (:func:`~mmseg_keyprotect.evaluation.strategies.restart_workers`).

        Yields:
            list[KeyedComponent]: the parts that were switched.
        """
        saved = self.apply(condition)
        try:
            yield [part for part, _ in saved]
        finally:
            for part, previous in saved:
                part.use_key(previous)

    def apply(self, condition: ConditionLike) -> List[Tuple[KeyedComponent, Optional[SecretKey]]]:
        """Give every part the key of ``condition`` until changed again (see :meth:`applied`).

        For a model loaded to run under one condition
        (:func:`~mmseg_keyprotect.apis.init_protected_model`); elsewhere prefer
        the context manager :meth:`applied`, which restores the keys.

        Returns:
            list: ``(part, previous active key)`` for every part.
        """
        key_for = _key_chooser(condition)
        saved = [(part, part.active_key) for part in self.parts]
        for part, _ in saved:
            part.use_key(key_for(part))
        return saved

    def incorrect_keys(self, num: int, seed: int = 0) -> Tuple[List[SecretKey], int]:
        """``num`` incorrect keys whose derived tables differ from the correct key's and
        each other's, and how many drawn duplicates were rejected
        (:func:`~mmseg_keyprotect.evaluation.conditions.draw_incorrect_keys`)."""
        return draw_incorrect_keys(num, seed, self.parts)

    def conditions(self, correct: bool = True, plain: bool = True, incorrect: int = 0,
                   seed: int = 0) -> Tuple[List[KeyCondition], int]:
        """correct, plain, then ``incorrect`` distinct incorrect keys; and the duplicates rejected.

        Raises:
            ValueError: ``incorrect`` is not a non-negative int, or no condition is selected.
        """
        keys, rejected = self.incorrect_keys(incorrect, seed)
        return condition_list(correct, plain, keys), rejected

    def check_stored(self, stored: Descriptor, what: str = 'checkpoint') -> None:
        """Raise :class:`ProtectionMismatchError` unless ``stored`` equals :meth:`describe`."""
        check_protection(stored, self.describe(), what)

    # ------------------------------------------------------------------ config side
    def _require_cfg(self, what: str) -> Mapping[str, Any]:
        if self.cfg is None:
            raise ValueError(f'Protection.{what} needs the config: build the protection with '
                             'Protection.from_config(cfg) or Protection.from_runner(runner)')
        return self.cfg

    def _config_nodes(self) -> List[Tuple[str, Any]]:
        """``(path, node)`` of every keyed node of the config."""
        found: List[Tuple[str, Any]] = []

        def walk(node: Any, path: str) -> None:
            if keyed_role(node) is not None:
                found.append((path, node))
            items = node.items() if isinstance(node, Mapping) else \
                enumerate(node) if isinstance(node, (list, tuple)) else ()
            for name, value in items:
                walk(value, f'{path}.{name}' if path else str(name))
        walk(getattr(self.cfg, '_cfg_dict', self.cfg), '')
        return found

    def pipeline_steps(self, loader: Optional[str] = None) -> List[Tuple[str, Any]]:
        """``(where, step config)`` of every keyed step in the config's data pipelines.

        Args:
            loader: only this dataloader (``'test_dataloader'`` ...); default all.
        """
        cfg = self._require_cfg('pipeline_steps')
        return [(f'{where}.pipeline[{i}]', step) for name, where, pipeline in
                _config_pipelines(cfg) if loader in (None, name)
                for i, step in enumerate(pipeline)
                if isinstance(keyed_role(step), PipelineStep)]

    def attacker_view(self) -> Tuple[Any, RemovedProtection]:
        """The config without its protection, as an attacker without the key runs it.

        Registered keyed types are removed as their :class:`KeyedType` says:
        pipeline steps leave their pipelines, preprocessors and segmentors
        become their plain types, builders are unwrapped. Key-condition loops
        become mmengine's plain loops and ``custom_hooks`` are dropped.

        Returns:
            (config, removed): an unprotected copy of the config and what was removed.
        """
        from mmengine.config import Config, ConfigDict
        cfg = copy.deepcopy(self._require_cfg('attacker_view'))
        if not isinstance(cfg, Config):
            cfg = Config(cfg)
        removed = RemovedProtection()
        cfg.model = ConfigDict(_strip(cfg.model.to_dict(), removed, ''))
        if isinstance(cfg.get('data_preprocessor'), Mapping):
            cfg.data_preprocessor = ConfigDict(
                _strip(dict(cfg.data_preprocessor), removed, 'data_preprocessor'))
        for loader, _, pipeline in list(_config_pipelines(cfg)):
            for step in [t for t in pipeline if isinstance(keyed_role(t), PipelineStep)]:
                if loader == 'train_dataloader':
                    removed.ciphers.append(dict(step))
                pipeline.remove(step)
        for loop in ('val_cfg', 'test_cfg'):
            if loop in cfg and str(cfg[loop].get('type', '')).startswith('KeyCondition'):
                cfg[loop] = ConfigDict(type=cfg[loop]['type'].replace('KeyCondition', ''))
        cfg.pop('custom_hooks', None)
        return cfg, removed

    def load_weights_as_stored(self) -> List[str]:
        """Turn weight decryption off in the config, in place.

        What someone who holds a checkpoint but not its key runs: the stored
        (encrypted) tensors load as they are.

        Returns:
            list[str]: the config paths of the protections changed.
        """
        self._require_cfg('load_weights_as_stored')
        changed = []
        for path, node in self._config_nodes():
            role = keyed_role(node)
            if isinstance(role, ProtectedSegmentor) and role.load_weights_as_stored(node):
                changed.append(f'{path}.{role.field}')
        return changed

    def check_sizes(self) -> None:
        """Check that the config's crop, pad and slide sizes are multiples of its block sizes.

        Every size the image has when a keyed pipeline step sees it
        (``RandomCrop`` ``crop_size``, ``Pad`` ``size``, a fixed-size
        ``Resize`` before the step) and every size the model cuts or pads the
        encrypted image to (the data preprocessor's ``size``; for val/test
        pipelines, ``slide`` inference's ``crop_size`` and ``stride``) must be
        a multiple of the step's block size. A cipher in the data
        preprocessor sees the images after every pipeline transform, so every
        fixed size of every pipeline and the preprocessor's
        ``size``/``size_divisor`` (also in its ``test_cfg``) are checked against it.

        Raises:
            ValueError: naming the offending size, where it is set, and the block size.
        """
        cfg = self._require_cfg('check_sizes')
        model = cfg.get('model') or {}
        preprocessor = model.get('data_preprocessor') or {}
        shared = []  # sizes the model cuts or pads every encrypted image to
        if preprocessor.get('size') is not None:
            shared.append(('model.data_preprocessor size', preprocessor.get('size')))
        test_cfg = model.get('test_cfg') or {}
        slide = [(f"model.test_cfg (mode='slide') {arg}", test_cfg.get(arg))
                 for arg in ('crop_size', 'stride')] if test_cfg.get('mode') == 'slide' else []
        for loader, where, pipeline in _config_pipelines(cfg):
            _check_pipeline(where, pipeline,
                            shared + (slide if loader != 'train_dataloader' else []))
        role = keyed_role(preprocessor)
        block_size = role.block_size(preprocessor) if isinstance(role, PreprocessorCipher) \
            else None
        if block_size is not None:
            _check_preprocessor(cfg, preprocessor, role, block_size, slide)

    def __repr__(self) -> str:
        return f'Protection({format_protection(self.describe())})'


def _strip(node: Any, removed: RemovedProtection, path: str) -> Any:
    """``node`` (a plain copy) with every registered keyed type removed, recursively."""
    if isinstance(node, Mapping):
        node = dict(node)
        role = keyed_role(node)
        if role is not None and not isinstance(role, PipelineStep):
            node = role.strip(node, removed, path)
            if isinstance(role, ProtectedBuilder):
                return _strip(node, removed, path)
        return {k: _strip(v, removed, f'{path}.{k}'.strip('.')) for k, v in node.items()}
    if isinstance(node, (list, tuple)):
        return type(node)(_strip(v, removed, f'{path}.{i}') for i, v in enumerate(node))
    return node


def _sizes(value: Any) -> Tuple[int, ...]:
    """The integers of a size argument (an int or an (h, w) / (w, h) pair)."""
    values = value if isinstance(value, (list, tuple)) else (value, )
    return tuple(v for v in values if isinstance(v, int) and not isinstance(v, bool))


def _check_multiple(value: Any, what: str, block_size: int, step: str) -> None:
    if any(v % block_size for v in _sizes(value)):
        raise ValueError(
            f'{what}={tuple(value) if isinstance(value, (list, tuple)) else value} is not a '
            f'multiple of {step} block_size={block_size}: the encrypted image would be cut '
            f'through its {block_size}x{block_size} blocks; use sizes that are multiples of '
            f'{block_size}')


def _fixed_size(where: str, i: int, transform: Any) -> Optional[Tuple[str, Any]]:
    """(name, size) if ``transform`` (item ``i`` of a pipeline) fixes the image size."""
    if not isinstance(transform, Mapping):
        return None
    kind = transform.get('type')
    arg = _SIZED_TRANSFORMS.get(kind)
    if arg is None or transform.get(arg) is None or \
            (kind == 'Resize' and transform.get('keep_ratio', False)):
        return None
    return f'{where}.pipeline[{i}] {kind} {arg}', transform[arg]


def _check_pipeline(where: str, pipeline: Sequence[Any], after: List[Tuple[str, Any]]) -> None:
    """Check the sizes fixed before each keyed step of ``pipeline``, and ``after``."""
    sized: List[Tuple[str, Any]] = []
    for i, transform in enumerate(pipeline):
        fixed = _fixed_size(where, i, transform)
        if fixed:
            sized.append(fixed)
        role = keyed_role(transform)
        block_size = role.block_size(transform) if isinstance(role, PipelineStep) else None
        if block_size is None:
            continue  # a malformed block size is reported by the step when it is built
        for what, value in sized + after:
            _check_multiple(value, what, block_size, transform['type'])


def _check_preprocessor(cfg: Mapping[str, Any], preprocessor: Mapping[str, Any],
                        role: PreprocessorCipher, block_size: int,
                        slide: List[Tuple[str, Any]]) -> None:
    """Check every size a data-preprocessor cipher's input or output is fixed to."""
    where = 'model.data_preprocessor'
    pre_test = preprocessor.get('test_cfg') or {}
    sizes = [(f'{where} {arg}', preprocessor.get(arg)) for arg in ('size', 'size_divisor')]
    sizes += [(f'{where}.test_cfg {arg}', pre_test.get(arg)) for arg in ('size', 'size_divisor')]
    sizes += slide
    for _, name, pipeline in _config_pipelines(cfg):
        sizes += [s for i, t in enumerate(pipeline) if (s := _fixed_size(name, i, t))]
    step = f"{where} {role.field} {preprocessor[role.field]['type']}"
    for what, value in sizes:
        if value is not None:
            _check_multiple(value, what, block_size, step)


# ------------------------------------------------------------------ descriptor checks
def format_protection(descriptor: Descriptor) -> str:
    """``'[BlockShuffle(block_size=2, key=<fingerprint>)]'``; ``'none'`` when empty."""
    if not descriptor:
        return 'none'
    items = []
    for entry in descriptor:
        fields = ', '.join(f'{k}={v!r}' for k, v in entry.items() if k not in ('type', 'key'))
        items.append(f"{entry['type']}({fields + ', ' if fields else ''}key=<{entry['key']}>)")
    return '[' + ', '.join(items) + ']'


def check_protection(stored: Descriptor, current: Descriptor, what: str = 'checkpoint') -> None:
    """Raise unless a checkpoint's stored protection equals the config's.

    Args:
        stored: the descriptor saved in the checkpoint's meta.
        current: :meth:`Protection.describe` of the model and data being run.
        what: how to name the checkpoint in the message.

    Raises:
        ProtectionMismatchError: saying what was stored, what the config has,
            and which entries differ.
    """
    stored_set = {tuple(sorted(e.items())) for e in stored}
    current_set = {tuple(sorted(e.items())) for e in current}
    if stored_set == current_set:
        return
    only_stored = [dict(e) for e in sorted(stored_set - current_set, key=repr)]
    only_current = [dict(e) for e in sorted(current_set - stored_set, key=repr)]
    raise ProtectionMismatchError(
        f'{what} was trained with protection {format_protection(stored)}, but the config has '
        f'{format_protection(current)} (only in the {what}: {format_protection(only_stored)}; '
        f'only in the config: {format_protection(only_current)}). Evaluate it with the config '
        'and key it was trained with')


def check_key_fingerprints(stored: Descriptor, keys: Sequence[SecretKey],
                           what: str = 'checkpoint') -> None:
    """Raise unless ``keys`` are exactly the keys recorded in a stored descriptor.

    Compares fingerprints only, before a model is built or run, so a wrong key
    file fails with a clear message instead of giving poor segmentation.

    Raises:
        KeyMismatchError: showing both sets of fingerprints (non-secret) and
            where the given keys came from.
    """
    expected = sorted({entry['key'] for entry in stored if 'key' in entry})
    given = {key.fingerprint: key.source for key in keys}
    if set(expected) == set(given):
        return
    shown = ', '.join(f'{fp} (from {src})' for fp, src in sorted(given.items())) or 'none'
    raise KeyMismatchError(
        f'key fingerprint {shown} does not match the fingerprint '
        f'{", ".join(expected) or "none"} recorded in the {what}: this is not the key the '
        'model was trained with')
