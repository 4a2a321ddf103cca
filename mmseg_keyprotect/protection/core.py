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
from typing import Any, Callable, Iterator, List, Mapping, Optional, Tuple, Union

from ..evaluation.conditions import KeyCondition, condition_list, draw_incorrect_keys
from ..keyed import KeyedComponent
from ..keys import SecretKey
from .descriptor import Descriptor, format_protection
from .keyed_types import (PipelineStep, ProtectedSegmentor, RemovedProtection, config_pipelines,
                          keyed_role, strip_protection)
from .parts import find_keyed_parts
from .sizes import check_sizes

__all__ = ['Protection', 'ConditionLike']


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

    @property
    def points(self) -> List[KeyedComponent]:
        """The channel permutations placed at points of the models, in module order.

        Each has ``purpose``, its point's full name (``'backbone.layer4:output'``).
        """
        from ..models.points import PointPermutation  # models/ imports this package
        return [part for part in self.parts if isinstance(part, PointPermutation)]

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
                config_pipelines(cfg) if loader in (None, name)
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
        cfg.model = ConfigDict(strip_protection(cfg.model.to_dict(), removed, ''))
        if isinstance(cfg.get('data_preprocessor'), Mapping):
            cfg.data_preprocessor = ConfigDict(
                strip_protection(dict(cfg.data_preprocessor), removed, 'data_preprocessor'))
        for loader, _, pipeline in list(config_pipelines(cfg)):
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

        See :func:`~mmseg_keyprotect.protection.sizes.check_sizes`.

        Raises:
            ValueError: naming the offending size, where it is set, and the block size.
        """
        check_sizes(self._require_cfg('check_sizes'))

    def __repr__(self) -> str:
        return f'Protection({format_protection(self.describe())})'
