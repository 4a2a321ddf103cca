"""Load checkpoints of every scheme without unpickling arbitrary objects.

mmengine 0.10.7 calls ``torch.load(filename, map_location)`` without
``weights_only``. Since torch 2.6 that means ``weights_only=True`` with
torch's default allowlist, which refuses mmengine's own checkpoints (they
hold the runner's ``MessageHub``: ``HistoryBuffer`` objects, numpy arrays and
numpy scalars), so ``--resume`` and ``tools/test.py`` fail with an
``UnpicklingError``. Going back to ``weights_only=False`` would let a
checkpoint run arbitrary code when loaded, which a model-protection plugin
must not allow.

:func:`install_safe_loaders` replaces the loader of every scheme of
:class:`mmengine.runner.CheckpointLoader` (local paths, ``http(s)://``, ``torchvision://``, ``open-mmlab://``, ``mmcls://``,
``s3://``/``petrel://``; ``pavi://`` is refused) with one that ends in
:func:`safe_torch_load`: ``weights_only=True`` with exactly the extra globals
an mmengine/mmseg checkpoint needs (:data:`CHECKPOINT_GLOBALS`). A checkpoint
that references anything else is refused with :class:`UnsafeCheckpointError`
naming the offending globals.

Importing the package does not install them. They are installed explicitly:
by :class:`~mmseg_keyprotect.engine.runner.KeyProtectedRunner`, the plugin's
hooks and loops, :mod:`mmseg_keyprotect.apis`, and by importing
:mod:`mmseg_keyprotect.compat` (the shipped configs list it in
``custom_imports``, so mmseg's ``init_model`` and ``MMSegInferencer`` load
safely too). :func:`uninstall_safe_loaders` puts mmengine's loaders back.

Versions: torch >= 2.6 loads safely. On torch 2.0-2.4, where
``weights_only`` cannot take extra globals, a restricted unpickler (torch's own
weights-only allowlist plus :data:`CHECKPOINT_GLOBALS`) does the same job, and
a warning says once that weights-only loading has known bypasses before
torch 2.6 (CVE-2025-32434): do not load untrusted checkpoints there.

To load a checkpoint that legitimately stores another type, allowlist that
type with torch's own mechanism, after checking that it is safe to build from
untrusted data::

    torch.serialization.add_safe_globals([MyType])
"""
from __future__ import annotations

import _compat_pickle
import importlib
import io
import os
import os.path as osp
import pickle
import warnings
from typing import Any, Callable, List, Optional, Tuple, Union
from urllib.parse import urlparse

import numpy as np
import torch
from mmengine.dist import get_dist_info
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader
from mmengine.runner import checkpoint as ckpt_utils

__all__ = ['CHECKPOINT_GLOBALS', 'UnsafeCheckpointError', 'load_from_local_weights_only',
           'safe_torch_load', 'install_safe_loaders', 'uninstall_safe_loaders',
           'safe_loaders_installed', 'SAFE_LOADERS']

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


def _refusal(filename: str, err: pickle.UnpicklingError,
             path: Optional[str] = None) -> UnsafeCheckpointError:
    """An error naming what ``filename`` asked for that is not allowed."""
    try:
        unsafe = torch.serialization.get_unsafe_globals_in_checkpoint(path)
    except Exception:  # not a zip checkpoint: only torch's message can say what failed
        unsafe = []
    reason = (f'it references {", ".join(sorted(unsafe))}, which is not allowed'
              if unsafe else f'unpickling was stopped: {_unpickler_reason(err)}')
    return UnsafeCheckpointError(
        f'refusing to load checkpoint {filename!r}: {reason}. mmseg-keyprotect loads '
        'checkpoints with torch.load(weights_only=True), allowing only torch\'s defaults and '
        'mmseg_keyprotect.checkpoint.CHECKPOINT_GLOBALS, because other objects could '
        'run code from the file. If you trust the file and the type is safe to build from '
        'untrusted data, allow it with `torch.serialization.add_safe_globals([...])`.')


def _restricted_pickle_module() -> Any:
    """A ``pickle`` module whose ``Unpickler`` builds only allowlisted globals.

    For torch < 2.5, where ``torch.serialization.safe_globals`` does not exist
    and ``weights_only=True`` cannot be given extra globals: torch's own
    weights-only allowlist plus :data:`CHECKPOINT_GLOBALS`, enforced in
    ``find_class`` (the "restricting globals" recipe of Python's ``pickle``
    documentation).
    """
    from torch import _weights_only_unpickler
    allowed = dict(_weights_only_unpickler._get_allowed_globals())
    for item in CHECKPOINT_GLOBALS:
        obj, name = item if isinstance(item, tuple) else \
            (item, f'{item.__module__}.{item.__qualname__}')
        allowed[name] = obj
    allowed['numpy.dtype'] = _dtype_without_objects

    class RestrictedUnpickler(pickle.Unpickler):

        def find_class(self, module: str, name: str) -> Any:
            if (module, name) in _compat_pickle.NAME_MAPPING:  # protocol 2: Python 2 names
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            module = _compat_pickle.IMPORT_MAPPING.get(module, module)
            full = f'{module}.{name}'
            if full in allowed:
                return allowed[full]
            raise UnsafeCheckpointError(f'the checkpoint references {full}, which is not '
                                        'allowed')

    class RestrictedPickle:
        Unpickler = RestrictedUnpickler
        __name__ = 'mmseg_keyprotect_restricted_pickle'
        load = staticmethod(lambda f, **kw: RestrictedUnpickler(f, **kw).load())

    return RestrictedPickle


def _dtype_without_objects(*args: Any) -> np.dtype:
    """``numpy.dtype`` for unpickling, refusing object dtypes (as the weights-only path does)."""
    dtype = np.dtype(*args)
    if dtype.hasobject:
        raise UnsafeCheckpointError('the checkpoint holds a numpy object array (ObjectDType), '
                                    'which is not allowed')
    return dtype


def _has_safe_globals() -> bool:
    return hasattr(torch.serialization, 'safe_globals')


def _torch_version() -> Tuple[int, int]:
    major, minor = torch.__version__.split('.')[:2]
    return int(major), int(''.join(c for c in minor if c.isdigit()) or 0)


_warned_old_torch = False


def _warn_old_torch() -> None:
    """Say once that weights-only loading is bypassable on torch < 2.6 (CVE-2025-32434)."""
    global _warned_old_torch
    if _warned_old_torch or _torch_version() >= (2, 6):
        return
    _warned_old_torch = True
    warnings.warn(
        f'torch {torch.__version__}: weights-only checkpoint loading has known bypasses before '
        'torch 2.6 (CVE-2025-32434); mmseg-keyprotect loads checkpoints with a restricted '
        'unpickler, but do not load checkpoints from untrusted sources on this torch. '
        'Upgrade to torch>=2.6 for safe loading.', UserWarning, stacklevel=3)


def safe_torch_load(source: Any, map_location: Any = None, name: str = 'checkpoint',
                    force_restricted_unpickler: bool = False) -> Any:
    """``torch.load`` that builds only tensors, containers and :data:`CHECKPOINT_GLOBALS`.

    Args:
        source: a path or a file-like object.
        map_location: as for :func:`torch.load`.
        name: how to name the checkpoint in errors.
        force_restricted_unpickler: use the path for torch < 2.5 (tests).

    Raises:
        UnsafeCheckpointError: if the checkpoint references anything else.
    """
    _warn_old_torch()
    path = source if isinstance(source, str) else None
    if _has_safe_globals() and not force_restricted_unpickler:
        with torch.serialization.safe_globals(list(CHECKPOINT_GLOBALS)):
            try:
                return torch.load(source, map_location=map_location, weights_only=True)
            except pickle.UnpicklingError as err:  # named while the allowlist is in force
                raise _refusal(name, err, path) from None
    try:
        return torch.load(source, map_location=map_location, weights_only=False,
                          pickle_module=_restricted_pickle_module())
    except pickle.UnpicklingError as err:
        raise UnsafeCheckpointError(f'refusing to load checkpoint {name!r}: {err}') from None


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
    return safe_torch_load(filename, map_location, filename)


def load_from_http(filename: str, map_location: Any = None, model_dir: Optional[str] = None,
                   progress: bool = False) -> Any:
    """Download a checkpoint once (torch hub's cache; rank 0 first) and load it safely."""
    rank, world_size = get_dist_info()
    folder = model_dir or osp.join(torch.hub.get_dir(), 'checkpoints')
    path = osp.join(folder, osp.basename(urlparse(filename).path))

    def fetch() -> None:
        if not osp.isfile(path):
            os.makedirs(folder, exist_ok=True)
            torch.hub.download_url_to_file(filename, path, progress=progress)

    if rank == 0:
        fetch()
    if world_size > 1:
        torch.distributed.barrier()
        if rank > 0:
            fetch()
    return load_from_local_weights_only(path, map_location)


def load_from_torchvision(filename: str, map_location: Any = None) -> Any:
    """``torchvision://NAME`` (and the deprecated ``modelzoo://NAME``), loaded safely."""
    name = filename.split('://', 1)[1]
    return load_from_http(ckpt_utils.get_torchvision_models()[name], map_location)


def load_from_openmmlab(filename: str, map_location: Any = None) -> Any:
    """``open-mmlab://NAME`` / ``openmmlab://NAME``, loaded safely."""
    name = filename.split('://', 1)[1]
    name = ckpt_utils.get_deprecated_model_names().get(name, name)
    url = ckpt_utils.get_external_models()[name]
    if url.startswith(('http://', 'https://')):
        return load_from_http(url, map_location)
    return load_from_local_weights_only(osp.join(ckpt_utils._get_mmengine_home(), url),
                                        map_location)


def load_from_mmcls(filename: str, map_location: Any = None) -> Any:
    """``mmcls://NAME``, loaded safely."""
    url = ckpt_utils.get_mmcls_models()[filename[len('mmcls://'):]]
    return ckpt_utils._process_mmcls_checkpoint(load_from_http(url, map_location))


def load_from_backend(filename: str, map_location: Any = None, backend: str = 'petrel') -> Any:
    """``s3://`` / ``petrel://`` through mmengine's file backends, loaded safely."""
    from mmengine.fileio import get_file_backend
    data = get_file_backend(filename, backend_args={'backend': backend}).get(filename)
    with io.BytesIO(data) as buffer:
        return safe_torch_load(buffer, map_location, filename)


def refuse_pavi(filename: str, map_location: Any = None) -> Any:
    """``pavi://`` is not supported: its client is not installable here to load it safely."""
    raise UnsafeCheckpointError(f'refusing to load {filename!r}: mmseg-keyprotect has no safe '
                                'loader for pavi://; download the file and load it by path')


#: Every scheme of mmengine's ``CheckpointLoader`` and the safe loader that replaces it.
SAFE_LOADERS = {
    '': load_from_local_weights_only,
    ('http://', 'https://'): load_from_http,
    ('modelzoo://', 'torchvision://'): load_from_torchvision,
    ('open-mmlab://', 'openmmlab://'): load_from_openmmlab,
    'mmcls://': load_from_mmcls,
    (r'(\S+\:)?s3://', r'(\S+\:)?petrel://'): load_from_backend,
    'pavi://': refuse_pavi,
}


_replaced: dict = {}


def _scheme_table() -> dict:
    # mmengine keeps the schemes in a class attribute; read it to restore them later.
    return CheckpointLoader._schemes


def install_safe_loaders() -> None:
    """Make every scheme of mmengine's ``CheckpointLoader`` load through :func:`safe_torch_load`.

    Idempotent; :func:`uninstall_safe_loaders` restores mmengine's loaders.
    """
    if safe_loaders_installed():
        return
    _replaced.clear()
    _replaced.update(_scheme_table())
    for prefixes, loader in SAFE_LOADERS.items():
        CheckpointLoader.register_scheme(prefixes=prefixes, loader=loader, force=True)


def uninstall_safe_loaders() -> None:
    """Put back the loaders :func:`install_safe_loaders` replaced."""
    if not _replaced:
        return
    table = _scheme_table()
    table.clear()
    table.update(_replaced)
    _replaced.clear()


def safe_loaders_installed() -> bool:
    """Whether every scheme of ``CheckpointLoader`` goes through the safe loaders."""
    return _scheme_table().get('') is load_from_local_weights_only
