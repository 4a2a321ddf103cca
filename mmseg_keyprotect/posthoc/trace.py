"""Record every torch operation of one forward pass, with the tensors it read and returned.

A :class:`~torch.overrides.TorchFunctionMode` sees each call of a torch
function or tensor method made by Python code (``F.conv2d``,
``F.batch_norm``, ``x + y``, ``x.view(...)``, ``torch.cat`` ...), once, at the
outermost level: what a function does inside is not recorded. Unlike
``torch.fx`` it runs the model's real Python code, so control flow, asserts and
shape arithmetic of mmseg's models need no changes; the price is that the
record holds one input's execution only (checked afterwards by running the
transformed model, see :mod:`.absorb`).

The records keep the tensors alive, so ``id(tensor)`` names one tensor for the
whole record (an in-place operation returns the same object as a new value).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Sequence, Tuple

from torch import Tensor
from torch.overrides import TorchFunctionMode

__all__ = ['OpRecord', 'record_ops', 'tensors_in', 'flat_tensor_args']


@dataclass
class OpRecord:
    """One call of a torch function.

    Attributes:
        func: the function or method called.
        name: its ``__name__`` (``'conv2d'``, ``'__iadd__'``, ``'view'`` ...).
        args: the positional arguments.
        kwargs: the keyword arguments.
        output: what it returned.
    """

    func: Callable[..., Any]
    name: str
    args: Tuple[Any, ...]
    kwargs: Dict[str, Any]
    output: Any


def tensors_in(value: Any) -> List[Tensor]:
    """The tensors in ``value`` (a tensor, or a tuple/list of them, one level deep)."""
    if isinstance(value, Tensor):
        return [value]
    if isinstance(value, (tuple, list)):
        return [v for v in value if isinstance(v, Tensor)]
    return []


class _Recorder(TorchFunctionMode):

    def __init__(self) -> None:
        super().__init__()
        self.records: List[OpRecord] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        output = func(*args, **kwargs)
        if tensors_in(output):  # shape/size/dim queries return no tensor
            self.records.append(OpRecord(func, getattr(func, '__name__', repr(func)),
                                         tuple(args), dict(kwargs), output))
        return output


def record_ops(run: Callable[[], Any]) -> Tuple[List[OpRecord], Any]:
    """Call ``run()`` and record every torch operation it makes.

    Returns:
        (records, result): the operations in the order they ran, and what ``run`` returned.
    """
    recorder = _Recorder()
    with recorder:
        result = run()
    return recorder.records, result


def flat_tensor_args(record: OpRecord) -> Sequence[Tensor]:
    """Every tensor argument of ``record``, lists included (``torch.cat``)."""
    found: List[Tensor] = []
    for value in list(record.args) + list(record.kwargs.values()):
        found += tensors_in(value)
    return found
