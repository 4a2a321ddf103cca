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
"""
from __future__ import annotations

import contextlib
from typing import Any, Dict, Iterator, List, Tuple

import torch
from mmengine.structures import BaseDataElement
from torch import nn

from ..keyed import KeyedComponent

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


class KeyIndependentPrefix:
    """Record once per batch, replay for every further key condition.

    Args:
        model (nn.Module): the model; it must contain at least one keyed
            ``nn.Module``, otherwise nothing is cached.

    Example:
        >>> prefix = KeyIndependentPrefix(model)  # doctest: +SKIP
        >>> with prefix.record():
        ...     first = model.test_step(batch)      # correct key
        >>> with key_condition(plain, model), prefix.replay():
        ...     second = model.test_step(batch)     # reuses the backbone
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = [m for m in model.modules() if not isinstance(m, KeyedComponent)]
        self.enabled = any(isinstance(m, KeyedComponent) for m in model.modules())
        self._outputs: Dict[int, List[Any]] = {}
        self._versions: List[Tuple[torch.Tensor, int]] = []
        self.replayed_calls = 0
        self.invalidated = False

    @contextlib.contextmanager
    def record(self) -> Iterator[None]:
        """Run one forward pass inside; remember the outputs of the key-independent prefix."""
        self._outputs, self._versions, self.invalidated = {}, [], False
        if not self.enabled:
            yield
            return
        clock = [0]
        # module, start, end, (output, [(tensor, version when returned)])
        calls: List[Tuple[nn.Module, int, int, Any]] = []
        starts: Dict[int, List[int]] = {}
        first_keyed = [None]
        handles = []

        def pre_hook(module: nn.Module, args: Any) -> None:
            clock[0] += 1
            if isinstance(module, KeyedComponent):
                if first_keyed[0] is None:
                    first_keyed[0] = clock[0]
                return
            starts.setdefault(id(module), []).append(clock[0])

        def post_hook(module: nn.Module, args: Any, output: Any) -> None:
            clock[0] += 1
            if not isinstance(module, KeyedComponent):
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
        self._outputs = {k: [output for output, _ in v] for k, v in kept.items()}
        self._versions = [tv for v in kept.values() for _, versions in v for tv in versions]
        self._check_versions()  # modified in place later in this very pass?

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
