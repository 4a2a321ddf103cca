"""Key conditions: correct, plain and incorrect keys, applied to a model and its data.

Both papers judge a protected model under three conditions:

* **correct**: every keyed component uses the key it was trained with;
* **plain**: no protection is applied (plain images, no feature permutation);
* **incorrect**: a random wrong key, the same for every keyed component (each
  derives its own permutation/mask from it), usually averaged over 100 keys.

Wrong keys are distinct as bytes, but what matters is what they *derive*: NP
with 2x2 blocks has only C(12, 6) = 924 masks, so among 100 random keys one may
reproduce the correct mask. :func:`draw_incorrect_keys` keeps drawing until every
keyed component's derived tables (permutation index, NP/FFX mask, FFX lookup)
differ from the correct key's and from every other drawn key's, and counts the
rejected duplicates.

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
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
from torch import nn

from ..keyed import KeyedComponent
from ..keys import SecretKey

__all__ = [
    'KeyCondition', 'make_conditions', 'draw_incorrect_keys', 'derived_tables', 'walk_containers',
    'find_keyed_components', 'key_condition', 'switched_keys'
]

#: Draws allowed per requested incorrect key (plus a fixed allowance) before giving up.
_DRAWS_PER_KEY = 50
_EXTRA_DRAWS = 1000

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
                    seed: int = 0,
                    components: Sequence[KeyedComponent] = ()) -> List[KeyCondition]:
    """The list of conditions to evaluate, incorrect keys drawn from ``seed``.

    Args:
        correct: include the correct key.
        plain: include the plain condition.
        incorrect: how many random incorrect keys (the papers use 100).
        seed: seed of the generator the incorrect keys are drawn from; the same
            seed gives the same keys on every rank and run.
        components: the keyed components in play; if given, the incorrect keys
            derive tables that differ from the correct key's and from each other
            (see :func:`draw_incorrect_keys`).

    Returns:
        list[KeyCondition]: correct, plain, then the incorrect keys.
    """
    keys, _ = draw_incorrect_keys(incorrect, seed, components)
    conditions = [KeyCondition.correct()] if correct else []
    if plain:
        conditions.append(KeyCondition.plain())
    conditions += [KeyCondition.incorrect(key, i) for i, key in enumerate(keys)]
    if not conditions:
        raise ValueError('no key condition selected: enable correct, plain or incorrect > 0')
    return conditions


def derived_tables(component: KeyedComponent, key: SecretKey) -> Optional[bytes]:
    """Everything ``component`` derives from ``key``, as bytes (``None``: not known).

    * block ciphers (also inside ``BlockCipherSegDataPreProcessor``): the
      tables of one ``M x M x C`` block (C = ``num_channels``, else 3): the
      SHF permutation, the NP mask, the FFX mask and scaled lookup. Whole-image
      tables are these, tiled over the blocks.
    * channel permutations: the permutation index (``None`` while the channel
      count is not known yet, before the first forward of a lazily sized one).
    """
    from ..models.permutation import ChannelPermutation, channel_permutation_index
    from ..transforms.block_cipher import BlockCipher
    cipher = getattr(component, 'cipher', component)
    if isinstance(cipher, BlockCipher):
        m = cipher.block_size
        tables = cipher.tables(key, (m, m, cipher.num_channels or 3))
        tables = tables if isinstance(tables, tuple) else (tables, )
        return b''.join(np.ascontiguousarray(t).tobytes() for t in tables)
    if isinstance(component, ChannelPermutation):
        if component.num_channels is None:
            return None
        return channel_permutation_index(key, component.purpose,
                                         component.num_channels).numpy().tobytes()
    return None


def draw_incorrect_keys(num: int, seed: int = 0, components: Sequence[KeyedComponent] = ()
                        ) -> Tuple[List[SecretKey], int]:
    """Draw ``num`` incorrect keys from ``seed`` whose derived tables are all distinct.

    Keys are drawn in order from ``numpy.random.default_rng(seed)`` (the same
    keys on every rank and run). A key is rejected if, for any component, it
    equals the component's correct key or its :func:`derived_tables` equal those
    of the correct key or of a key already kept. Components whose tables are not
    known are compared by key only. Without components every drawn key is kept.

    Args:
        num: how many keys.
        seed: seed of the generator.
        components: the keyed components in play.

    Returns:
        tuple: the keys, and how many duplicates were rejected on the way.

    Raises:
        ValueError: ``num`` is not a non-negative int, or the table space of a
            component is too small to give ``num`` distinct keys (after
            ``50 * num + 1000`` draws).
    """
    if isinstance(num, bool) or not isinstance(num, int) or num < 0:
        raise ValueError(f'incorrect must be a non-negative int, got {num!r}')
    rng = np.random.default_rng(seed)
    seen: Dict[int, set] = {}
    for i, component in enumerate(components):
        tables = derived_tables(component, component.correct_key)
        seen[i] = set() if tables is None else {tables}
    keys: List[SecretKey] = []
    rejected = 0
    max_draws = _DRAWS_PER_KEY * num + _EXTRA_DRAWS
    while len(keys) < num:
        if len(keys) + rejected >= max_draws:
            names = ', '.join(sorted({type(c).__name__ for c in components}))
            raise ValueError(
                f'only {len(keys)} of {num} incorrect keys derive tables that differ from the '
                f"correct key's and from each other after {max_draws} draws ({rejected} "
                f'duplicates rejected): the table space of the keyed components ({names}) is '
                'too small for that many keys; ask for fewer incorrect keys')
        key = SecretKey.random(rng)
        candidate = {}
        duplicate = False
        for i, component in enumerate(components):
            if key == component.correct_key:
                duplicate = True
                break
            tables = derived_tables(component, key)
            if tables is not None and tables in seen[i]:
                duplicate = True
                break
            candidate[i] = tables
        if duplicate:
            rejected += 1
            continue
        for i, tables in candidate.items():
            if tables is not None:
                seen[i].add(tables)
        keys.append(key)
    return keys, rejected


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
