"""Reuse the key-independent part of a forward pass across key conditions.

When a model is evaluated on the same batch under many key conditions and the
only keyed components sit *inside* the model (feature-map permutations), every
module that finishes before the first keyed module runs computes the same
output under every condition. :class:`KeyIndependentPrefix` records one
reference forward pass, finds the outermost such modules (for a permutation at
``decode_head.conv_seg:input`` that is the whole backbone and the head's
convolutions), and replays their outputs in the following passes instead of
recomputing them. The rest of the network runs per condition as usual, so no
per-architecture code is needed.

Data flows forward in time: a module whose call *ends* before the first keyed
module *starts* cannot depend on the key. Replayed tensors are handed out as
they are (no copy) and their version counters are checked after every pass:
if anything modified one in place, that pass was still right (it saw what a
fresh computation would have), but the cache is dropped and the remaining
conditions of the batch are computed in full. Data samples (which the model
annotates with its predictions) are cloned on every replay.

Replay is only right when the prefix is a pure function of the batch. The
record pass checks that and, if not, keeps nothing (every condition then runs
the whole network) and says why in :attr:`KeyIndependentPrefix.unsafe_reason`:

* a prefix module (or one of its submodules) is in train mode (batch-norm
  statistics, active dropout);
* the prefix drew random numbers (torch's CPU or CUDA generator, numpy's or
  Python's global one changed between the start of the pass and the first keyed
  module), e.g. dropout or noise that runs in eval mode too;
* a prefix module or a submodule has forward hooks or pre-hooks, or global
  forward hooks are installed: replay would skip them or run them on cached
  outputs.
"""
from __future__ import annotations

import contextlib
import random
from typing import Any, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
from mmengine.structures import BaseDataElement
from torch import nn

from ..protection import Protection

__all__ = ['KeyIndependentPrefix']


def _fresh(obj: Any) -> Any:
    """Clone the data samples (``BaseDataElement``) inside containers; keep tensors."""
    if isinstance(obj, BaseDataElement):
        return obj.clone()
    if isinstance(obj, (list, tuple)):
        return type(obj)(_fresh(o) for o in obj)
    if isinstance(obj, dict):
        return {k: _fresh(v) for k, v in obj.items()}
    return obj


def _tensors(obj: Any) -> Iterator[torch.Tensor]:
    """The tensors directly inside (nested) lists, tuples and dicts."""
    if isinstance(obj, torch.Tensor):
        yield obj
    elif isinstance(obj, (list, tuple)):
        for o in obj:
            yield from _tensors(o)
    elif isinstance(obj, dict):
        for o in obj.values():
            yield from _tensors(o)


def _hook_count(module: nn.Module) -> Tuple[int, int]:
    return len(module._forward_hooks), len(module._forward_pre_hooks)


def _rng_state() -> Tuple[Any, ...]:
    """The global random generators' states: torch CPU (and CUDA if initialised), numpy, random."""
    cuda = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else []
    numpy_state = np.random.get_state()
    return (torch.get_rng_state(), cuda, numpy_state[1].copy(), numpy_state[2:],
            random.getstate())


def _same_rng(a: Tuple[Any, ...], b: Tuple[Any, ...]) -> bool:
    return (torch.equal(a[0], b[0]) and len(a[1]) == len(b[1])
            and all(torch.equal(x, y) for x, y in zip(a[1], b[1]))
            and np.array_equal(a[2], b[2]) and a[3] == b[3] and a[4] == b[4])


class KeyIndependentPrefix:
    """Record once per batch, replay for every further key condition.

    Args:
        model (nn.Module): the model; it must contain at least one keyed
            ``nn.Module``, otherwise nothing is cached.

    Example:
        >>> prefix = KeyIndependentPrefix(model)  # doctest: +SKIP
        >>> with prefix.record():
        ...     first = model.test_step(batch)      # correct key
        >>> with Protection.of(model).applied('plain'), prefix.replay():
        ...     second = model.test_step(batch)     # reuses the backbone
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self._keyed = {id(m) for m in Protection.of(model).keyed_modules}
        self.modules = [m for m in model.modules() if id(m) not in self._keyed]
        self.enabled = bool(self._keyed)
        self._outputs: Dict[int, List[Any]] = {}
        self._versions: List[Tuple[torch.Tensor, int]] = []
        self.replayed_calls = 0
        self.invalidated = False
        self.unsafe_reason: Optional[str] = None

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        """Run one forward pass inside; remember the outputs of the key-independent prefix."""
        self._outputs, self._versions, self.invalidated = {}, [], False
        self.unsafe_reason = None
        if not self.enabled:
            yield
            return
        own_hooks = {id(m): _hook_count(m) for m in self.model.modules()}
        rng_before = _rng_state()
        rng_at_keyed: List[Any] = []
        clock = [0]
        # module, start, end, (output, [(tensor, version when returned)])
        calls: List[Tuple[nn.Module, int, int, Any]] = []
        starts: Dict[int, List[int]] = {}
        first_keyed = [None]
        handles = []

        def pre_hook(module: nn.Module, args: Any) -> None:
            clock[0] += 1
            if id(module) in self._keyed:
                if first_keyed[0] is None:
                    first_keyed[0] = clock[0]
                    rng_at_keyed.append(_rng_state())
                return
            starts.setdefault(id(module), []).append(clock[0])

        def post_hook(module: nn.Module, args: Any, output: Any) -> None:
            clock[0] += 1
            if id(module) not in self._keyed:
                start = starts[id(module)].pop()
                output = _fresh(output)
                versions = [(t, t._version) for t in _tensors(output)]
                calls.append((module, start, clock[0], (output, versions)))

        for module in self.model.modules():
            handles.append(module.register_forward_pre_hook(pre_hook))
            handles.append(module.register_forward_hook(post_hook))
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()
        if first_keyed[0] is None:
            return  # no keyed module ran: nothing is known to be key-independent
        kept = self._outermost_before(calls, first_keyed[0])
        self.unsafe_reason = self._why_unsafe(kept, own_hooks, rng_before, rng_at_keyed[0])
        if self.unsafe_reason is not None:
            return
        self._outputs = {k: [output for output, _ in v] for k, v in kept.items()}
        self._versions = [tv for v in kept.values() for _, versions in v for tv in versions]
        self._check_versions()  # modified in place later in this very pass?

    def _why_unsafe(self, kept: Dict[int, List[Any]], hooks: Dict[int, Tuple[int, int]],
                    rng_before: Any, rng_at_keyed: Any) -> Optional[str]:
        """Why replaying the ``kept`` prefix could differ from computing it (None: it cannot)."""
        global_hooks = [name for name in ('_global_forward_hooks', '_global_forward_pre_hooks')
                        if getattr(torch.nn.modules.module, name, None)]
        if global_hooks:
            return f'global forward hooks are installed ({", ".join(global_hooks)})'
        names = {id(m): name or type(m).__name__ for name, m in self.model.named_modules()}
        prefix_modules = [m for m in self.modules if id(m) in kept]
        for root in prefix_modules:
            for module in root.modules():
                where = f'{names.get(id(module))} (before the first keyed point)'
                if module.training:
                    return f'{where} is in train mode'
                if hooks.get(id(module), (0, 0)) != (0, 0):
                    return f'{where} has forward hooks'
        if not _same_rng(rng_before, rng_at_keyed):
            return 'the layers before the first keyed point drew random numbers'
        return None

    def _check_versions(self) -> None:
        """Drop the cache if a pass modified a cached tensor in place."""
        if any(t._version != version for t, version in self._versions):
            self._outputs, self._versions, self.invalidated = {}, [], True

    @staticmethod
    def _outermost_before(calls: List[Tuple[nn.Module, int, int, Any]],
                          first_keyed: int) -> Dict[int, List[Any]]:
        """Outputs of the calls that end before ``first_keyed`` and are not nested in another."""
        done = sorted((c for c in calls if c[2] < first_keyed), key=lambda c: c[1])
        outermost: List[Tuple[nn.Module, int, int, Any]] = []
        for call in done:
            if outermost and call[1] > outermost[-1][1] and call[2] < outermost[-1][2]:
                continue  # nested inside the previous outermost call
            outermost.append(call)
        by_module: Dict[int, List[Any]] = {}
        for module, _, _, output in outermost:
            by_module.setdefault(id(module), []).append(output)
        return by_module

    @contextlib.contextmanager
    def replay(self) -> Iterator[None]:
        """Run a forward pass of the same batch inside; prefix modules return cached outputs."""
        if not self._outputs:
            yield
            return
        patched = []
        for module in self.modules:
            outputs = self._outputs.get(id(module))
            if outputs is None:
                continue
            module.forward = self._replayer(module, outputs)
            patched.append(module)
        try:
            yield
        finally:
            for module in patched:
                del module.forward
            self._check_versions()

    def _replayer(self, module: nn.Module, outputs: List[Any]):
        calls = iter(outputs)

        def forward(*args: Any, **kwargs: Any) -> Any:
            try:
                output = next(calls)
            except StopIteration:
                raise RuntimeError(
                    f'{type(module).__name__} was called more often than in the recorded '
                    'pass; the batch or the control flow changed between conditions') from None
            self.replayed_calls += 1
            return _fresh(output)

        return forward
