"""Key conditions: correct, plain and incorrect keys, applied to a model and its data.

Both papers judge a protected model under three conditions:

* **correct**: every keyed component uses the key it was trained with;
* **plain**: no protection is applied (plain images, no feature permutation);
* **incorrect**: a random wrong key, the same for every keyed component (each
  derives its own permutation/mask from it), usually averaged over 100 keys.

:func:`key_condition` applies one condition to every
:class:`~mmseg_keyprotect.keyed.KeyedComponent` reachable from a model, a
dataloader, a dataset or a pipeline, and restores the previous state on exit.

Example:
    >>> conditions = make_conditions(incorrect=100, seed=0)
    >>> with key_condition(conditions[1], model, dataloader):  # doctest: +SKIP
    ...     outputs = model.test_step(batch)  # plain
"""
from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Any, Callable, Iterator, List, Optional

import numpy as np
from torch import nn

from ..keyed import KeyedComponent
from ..keys import SecretKey

__all__ = [
    'KeyCondition', 'make_conditions', 'walk_containers', 'find_keyed_components', 'key_condition',
    'switched_keys'
]

# Attributes through which datasets, dataloaders and pipelines hold their transforms.
_CONTAINER_ATTRS = ('dataset', 'datasets', 'pipeline', 'transforms', 'subroutines')


@dataclass(frozen=True)
class KeyCondition:
    """One key condition.

    Args:
        kind (str): ``'correct'``, ``'plain'`` or ``'incorrect'``.
        key (SecretKey, optional): the wrong key, for ``'incorrect'`` only.
        index (int, optional): the number of the incorrect key (0-based).
    """

    kind: str
    key: Optional[SecretKey] = None
    index: Optional[int] = None

    def __post_init__(self) -> None:
        if self.kind not in ('correct', 'plain', 'incorrect'):
            raise ValueError(f"kind must be 'correct', 'plain' or 'incorrect', got {self.kind!r}")
        if (self.kind == 'incorrect') != (self.key is not None):
            raise ValueError('an incorrect condition needs a key; correct and plain take none')

    @classmethod
    def correct(cls) -> 'KeyCondition':
        return cls('correct')

    @classmethod
    def plain(cls) -> 'KeyCondition':
        return cls('plain')

    @classmethod
    def incorrect(cls, key: SecretKey, index: int = 0) -> 'KeyCondition':
        return cls('incorrect', key, index)

    @property
    def label(self) -> str:
        """``'correct'``, ``'plain'`` or ``'incorrect/007'``."""
        return self.kind if self.index is None else f'{self.kind}/{self.index:03d}'

    def key_for(self, component: KeyedComponent) -> Optional[SecretKey]:
        """The key ``component`` uses under this condition (``None``: plain)."""
        if self.kind == 'correct':
            return component.correct_key
        if self.kind == 'plain':
            return None
        if self.key == component.correct_key:
            raise ValueError(f'incorrect key {self.label} equals the correct key of '
                             f'{type(component).__name__}')
        return self.key


def make_conditions(correct: bool = True,
                    plain: bool = True,
                    incorrect: int = 100,
                    seed: int = 0) -> List[KeyCondition]:
    """The list of conditions to evaluate, incorrect keys drawn from ``seed``.

    Args:
        correct: include the correct key.
        plain: include the plain condition.
        incorrect: how many random incorrect keys (the papers use 100).
        seed: seed of the generator the incorrect keys are drawn from; the same
            seed gives the same keys on every rank and run.

    Returns:
        list[KeyCondition]: correct, plain, then the incorrect keys.
    """
    if isinstance(incorrect, bool) or not isinstance(incorrect, int) or incorrect < 0:
        raise ValueError(f'incorrect must be a non-negative int, got {incorrect!r}')
    conditions = [KeyCondition.correct()] if correct else []
    if plain:
        conditions.append(KeyCondition.plain())
    rng = np.random.default_rng(seed)
    conditions += [KeyCondition.incorrect(SecretKey.random(rng), i) for i in range(incorrect)]
    if not conditions:
        raise ValueError('no key condition selected: enable correct, plain or incorrect > 0')
    return conditions


def walk_containers(*targets: Any) -> Iterator[Any]:
    """Every object reachable from ``targets`` through data containers, each once.

    Follows lists/tuples and the attributes through which dataloaders,
    (wrapped) datasets and pipelines hold each other (``dataset``,
    ``datasets``, ``pipeline``, ``transforms``, ``subroutines``). Modules
    are yielded with all their submodules; keyed components are not entered.
    """
    seen = set()
    stack = list(reversed(targets))
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            yield from (m for m in obj.modules() if id(m) not in seen or m is obj)
            seen.update(id(m) for m in obj.modules())
            continue
        yield obj
        if isinstance(obj, KeyedComponent):
            continue
        if isinstance(obj, (list, tuple)):
            stack.extend(reversed(obj))
            continue
        state = getattr(obj, '__dict__', {})
        stack.extend(reversed([state[attr] for attr in _CONTAINER_ATTRS if attr in state]))


def find_keyed_components(*targets: Any) -> List[KeyedComponent]:
    """Every keyed component reachable from ``targets``, each once, in a stable order.

    Args:
        *targets: models (``nn.Module``, DDP-wrapped too), dataloaders,
            datasets (wrapped ones too), pipelines (``Compose``, test-time
            augmentation) or keyed components.
    """
    return [obj for obj in walk_containers(*targets) if isinstance(obj, KeyedComponent)]


@contextlib.contextmanager
def key_condition(condition: KeyCondition, *targets: Any) -> Iterator[List[KeyedComponent]]:
    """Apply ``condition`` to every keyed component of ``targets``; restore on exit.

    Dataloader workers hold their own copy of the pipeline: switch the
    condition *before* an iterator (and its workers) is created, and recreate
    persistent workers (see :func:`mmseg_keyprotect.engine.loops.restart_workers`).

    Yields:
        list[KeyedComponent]: the components that were switched.
    """
    with switched_keys(condition.key_for, *targets) as components:
        yield components


@contextlib.contextmanager
def switched_keys(key_for: Callable[[KeyedComponent], Optional[SecretKey]],
                  *targets: Any) -> Iterator[List[KeyedComponent]]:
    """Give each keyed component of ``targets`` the key ``key_for(component)``; restore on exit.

    The mechanism under :func:`key_condition`; ``key_for`` may return any key
    (``None``: plain), e.g. a candidate in a key search.

    Yields:
        list[KeyedComponent]: the components that were switched.
    """
    components = find_keyed_components(*targets)
    saved = [(c, c.active_key) for c in components]
    try:
        for component in components:
            component.use_key(key_for(component))
        yield components
    finally:
        for component, previous in saved:
            component.use_key(previous)
