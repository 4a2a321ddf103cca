"""Start mmengine's ``pytorch`` launcher on machines without a GPU.

mmengine 0.10.7's ``init_dist('pytorch')`` calls ``torch.cuda.set_device``
unconditionally, so ``tools/dist_train.sh`` / ``torchrun ... --launcher
pytorch`` fail on a CPU-only torch build. Two explicit ways around it:

* :class:`~mmseg_keyprotect.engine.runner.KeyProtectedRunner` calls
  :func:`init_cpu_process_group` before mmengine's ``setup_env``, which then
  finds the process group started and skips ``init_dist``: nothing of
  mmengine is patched;
* for mmengine's own ``Runner`` (mmseg's ``tools/test.py`` ignores
  ``runner_type``), :func:`install_cpu_launcher` (called by
  :mod:`mmseg_keyprotect.compat`) wraps mmengine's pytorch launcher so that,
  on a machine without an accelerator, it starts the gloo group itself; with
  an accelerator it defers to mmengine unchanged. :func:`uninstall_cpu_launcher`
  restores it.
"""
from __future__ import annotations

import atexit
import datetime
import functools
from typing import Any, Callable, Mapping, Optional

import torch
import torch.distributed as torch_dist
import torch.multiprocessing as mp
from mmengine.device import is_mlu_available, is_musa_available, is_npu_available
from mmengine.dist import utils as dist_utils

__all__ = ['init_cpu_process_group', 'install_cpu_launcher', 'uninstall_cpu_launcher',
           'cpu_launcher_installed']

# mmengine 0.10.7 keeps the pytorch launcher in a private function; this is the one place
# the plugin touches it, and only when asked to (compat).
_LAUNCHER_ATTR = '_init_dist_pytorch'
_original: Optional[Callable[..., None]] = None


def _has_accelerator() -> bool:
    return (torch.cuda.is_available() or is_mlu_available() or is_npu_available()
            or is_musa_available())


def _start_gloo(backend: str, **kwargs: Any) -> None:
    if backend == 'nccl':
        raise ValueError("dist backend 'nccl' needs GPUs; on CPU set "
                         "env_cfg = dict(dist_cfg=dict(backend='gloo'))")
    torch_dist.init_process_group(backend=backend, **kwargs)
    # mmseg's tools never destroy the group; a gloo rank that exits with it alive can abort
    # in teardown ("terminate called without an active exception") after finishing its work.
    atexit.register(_destroy_process_group)


def init_cpu_process_group(launcher: str, dist_cfg: Mapping[str, Any]) -> bool:
    """Initialise the process group for ``launcher='pytorch'`` on a CPU-only machine.

    Args:
        launcher: the runner's launcher (``'none'``, ``'pytorch'``, ``'slurm'``, ``'mpi'``).
        dist_cfg: ``env_cfg.dist_cfg`` (``backend``, ``timeout`` in seconds, ...).

    Returns:
        bool: True if this function started the process group.

    Raises:
        ValueError: if ``backend='nccl'`` is asked for on a machine without GPUs.
    """
    if launcher != 'pytorch' or _has_accelerator() or not torch_dist.is_available() \
            or torch_dist.is_initialized():
        return False
    kwargs = dict(dist_cfg)
    backend = kwargs.pop('backend', 'nccl')
    if kwargs.pop('init_backend', 'torch') != 'torch':
        return False
    if kwargs.get('timeout') is not None:
        kwargs['timeout'] = datetime.timedelta(seconds=kwargs['timeout'])
    if mp.get_start_method(allow_none=True) is None:
        mp.set_start_method('spawn')
    _start_gloo(backend, **kwargs)
    return True


def install_cpu_launcher() -> None:
    """Make mmengine's pytorch launcher work without a GPU (idempotent)."""
    global _original
    if _original is not None:
        return
    original = getattr(dist_utils, _LAUNCHER_ATTR)

    @functools.wraps(original)
    def launcher(backend: str, init_backend: str = 'torch', **kwargs: Any) -> None:
        if _has_accelerator() or init_backend != 'torch':
            return original(backend, init_backend=init_backend, **kwargs)
        _start_gloo(backend, **kwargs)

    _original = original
    setattr(dist_utils, _LAUNCHER_ATTR, launcher)


def uninstall_cpu_launcher() -> None:
    """Put back mmengine's pytorch launcher."""
    global _original
    if _original is not None:
        setattr(dist_utils, _LAUNCHER_ATTR, _original)
        _original = None


def cpu_launcher_installed() -> bool:
    """Whether :func:`install_cpu_launcher` is in effect."""
    return _original is not None


def _destroy_process_group() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()
