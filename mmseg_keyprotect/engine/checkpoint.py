"""Load local checkpoints with ``torch.load(weights_only=True)`` and an explicit allowlist.

mmengine 0.10.7 calls ``torch.load(filename, map_location)`` without
``weights_only``. Since torch 2.6 that means ``weights_only=True`` with
torch's default allowlist, which refuses mmengine's own checkpoints (they
hold the runner's ``MessageHub``: ``HistoryBuffer`` objects, numpy arrays and
numpy scalars), so ``--resume`` and ``tools/test.py`` fail with an
``UnpicklingError``. Going back to ``weights_only=False`` would let a
checkpoint run arbitrary code when loaded, which a model-protection plugin
must not allow.

Importing :mod:`mmseg_keyprotect` (as ``custom_imports`` does) replaces
mmengine's local-file loader (the ``''`` scheme of
:class:`mmengine.runner.CheckpointLoader`) with
:func:`load_from_local_weights_only`: still ``weights_only=True``, with
exactly the extra globals an mmengine/mmseg checkpoint needs
(:data:`CHECKPOINT_GLOBALS`). A checkpoint that references anything else is
refused with :class:`UnsafeCheckpointError` naming the offending globals.

To load a checkpoint that legitimately stores another type, allowlist that
type with torch's own mechanism, after checking that it is safe to build from
untrusted data::

    torch.serialization.add_safe_globals([MyType])
"""
from __future__ import annotations

import importlib
import os.path as osp
import pickle
from typing import Any, Callable, List, Tuple, Union

import numpy as np
import torch
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader

__all__ = ['CHECKPOINT_GLOBALS', 'UnsafeCheckpointError', 'load_from_local_weights_only']

SafeGlobal = Union[Callable, Tuple[Callable, str]]

# HistoryBuffer pickles its statistics methods as getattr(HistoryBuffer, name).
_HISTORY_BUFFER_METHODS = ('min', 'max', 'current', 'mean')


class UnsafeCheckpointError(pickle.UnpicklingError):
    """A checkpoint references a global that is not on the allowlist."""


def _history_buffer_getattr(obj: Any, name: str) -> Any:
    """``getattr`` restricted to the statistics methods of ``HistoryBuffer``.

    Stands in for ``builtins.getattr`` while unpickling, so a checkpoint can
    rebuild ``HistoryBuffer`` but cannot reach any other attribute.

    Raises:
        pickle.UnpicklingError: for any other object or attribute.
    """
    if obj is HistoryBuffer and name in _HISTORY_BUFFER_METHODS:
        return getattr(HistoryBuffer, name)
    raise pickle.UnpicklingError(
        f'checkpoint asks for getattr({obj!r}, {name!r}); only '
        f'getattr(HistoryBuffer, one of {_HISTORY_BUFFER_METHODS}) is allowed')


def _numpy_globals() -> List[SafeGlobal]:
    """What pickled numpy arrays, dtypes and scalars reference, under numpy 1.x and 2.x names."""
    try:
        multiarray = importlib.import_module('numpy._core.multiarray')
    except ImportError:  # numpy < 1.26
        multiarray = importlib.import_module('numpy.core.multiarray')
    found: List[SafeGlobal] = [np.ndarray, np.dtype]
    for package in ('numpy.core', 'numpy._core'):
        found += [(multiarray._reconstruct, f'{package}.multiarray._reconstruct'),
                  (multiarray.scalar, f'{package}.multiarray.scalar')]
    # Since numpy 1.25 every dtype has its own class (numpy.dtypes.Float64DType ...). Object
    # arrays stay refused: no checkpoint of ours holds one.
    dtype_classes = {type(np.dtype(code)) for code in np.typecodes['All'] if code != 'O'}
    dtype_classes.discard(np.dtype)
    return found + sorted(dtype_classes, key=lambda cls: cls.__name__)


CHECKPOINT_GLOBALS: Tuple[SafeGlobal, ...] = (
    HistoryBuffer,
    *(getattr(HistoryBuffer, name) for name in _HISTORY_BUFFER_METHODS),
    (_history_buffer_getattr, 'builtins.getattr'),
    *_numpy_globals(),
)
"""Globals allowed on top of torch's ``weights_only`` defaults.

``(object, name)`` pairs map the name written in the checkpoint to the object
used instead.
"""


def _unpickler_reason(err: pickle.UnpicklingError) -> str:
    """The part of torch's weights-only error that says what was refused."""
    detail = str(err).split('WeightsUnpickler error:', 1)[-1]
    paragraphs = [p.strip() for p in detail.split('\n\n') if p.strip()]
    return paragraphs[0] if paragraphs else type(err).__name__


def _refusal(filename: str, err: pickle.UnpicklingError) -> UnsafeCheckpointError:
    """An error naming what ``filename`` asked for that is not allowed."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(filename)
    except Exception:  # not a zip checkpoint: only torch's message can say what failed
        unsafe = []
    reason = (f'it references {", ".join(sorted(unsafe))}, which is not allowed'
              if unsafe else f'unpickling was stopped: {_unpickler_reason(err)}')
    return UnsafeCheckpointError(
        f'refusing to load checkpoint {filename!r}: {reason}. mmseg-keyprotect loads '
        'checkpoints with torch.load(weights_only=True), allowing only torch\'s defaults and '
        'mmseg_keyprotect.engine.checkpoint.CHECKPOINT_GLOBALS, because other objects could '
        'run code from the file. If you trust the file and the type is safe to build from '
        'untrusted data, allow it with `torch.serialization.add_safe_globals([...])`.')


def load_from_local_weights_only(filename: str, map_location: Any = None) -> Any:
    """Load a local checkpoint with ``weights_only=True`` and :data:`CHECKPOINT_GLOBALS`.

    Registered as mmengine's loader for local paths (the ``''`` scheme), so
    ``load_checkpoint``, ``Runner.resume`` and ``Runner.load_checkpoint`` use it.

    Args:
        filename: path of the checkpoint (``~`` is expanded).
        map_location: as for :func:`torch.load`.

    Returns:
        The loaded checkpoint (usually a dict).

    Raises:
        FileNotFoundError: if ``filename`` is not a file.
        UnsafeCheckpointError: if the checkpoint references a global that is
            not allowed; the message names it.
    """
    filename = osp.expanduser(filename)
    if not osp.isfile(filename):
        raise FileNotFoundError(f'{filename} can not be found.')
    with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
        try:
            return torch.load(filename, map_location=map_location, weights_only=True)
        except pickle.UnpicklingError as err:
            raise _refusal(filename, err) from None


CheckpointLoader.register_scheme(prefixes='', loader=load_from_local_weights_only, force=True)
