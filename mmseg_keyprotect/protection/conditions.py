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

Applying a condition to a model and its data is the job of the protection object
(:meth:`mmseg_keyprotect.protection.Protection.applied`).

Example:
    >>> conditions = make_conditions(incorrect=100, seed=0)
    >>> with Protection.of(model, dataloader).applied(conditions[1]):  # doctest: +SKIP
    ...     outputs = model.test_step(batch)  # plain
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..keyed import KeyedComponent
from ..keys import SecretKey

__all__ = ['KeyCondition', 'make_conditions', 'condition_list', 'draw_incorrect_keys']

#: Draws allowed per requested incorrect key (plus a fixed allowance) before giving up.
_DRAWS_PER_KEY = 50
_EXTRA_DRAWS = 1000



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
    return condition_list(correct, plain, keys)


def condition_list(correct: bool, plain: bool, keys: Sequence[SecretKey]) -> List[KeyCondition]:
    """correct, plain (each if asked for), then one incorrect condition per key.

    Raises:
        ValueError: if no condition is selected.
    """
    conditions = [KeyCondition.correct()] if correct else []
    if plain:
        conditions.append(KeyCondition.plain())
    conditions += [KeyCondition.incorrect(key, i) for i, key in enumerate(keys)]
    if not conditions:
        raise ValueError('no key condition selected: enable correct, plain or incorrect > 0')
    return conditions


def draw_incorrect_keys(num: int, seed: int = 0, components: Sequence[KeyedComponent] = ()
                        ) -> Tuple[List[SecretKey], int]:
    """Draw ``num`` incorrect keys from ``seed`` whose derived tables are all distinct.

    Keys are drawn in order from ``numpy.random.default_rng(seed)`` (the same
    keys on every rank and run). A key is rejected if, for any component, it
    equals the component's correct key or its derived tables
    (:meth:`~mmseg_keyprotect.keyed.KeyedComponent.derived_tables`) equal those
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
        tables = component.derived_tables(component.correct_key)
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
            tables = component.derived_tables(key)
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
