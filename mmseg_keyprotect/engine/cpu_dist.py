"""Let mmengine's PyTorch launcher run on machines without a GPU.

mmengine 0.10.7's ``_init_dist_pytorch`` calls ``torch.cuda.set_device``
unconditionally, so ``tools/dist_train.sh`` / ``torchrun ... --launcher
pytorch`` fail on a CPU-only torch build (``torch._C`` has no
``_cuda_setDevice``). On such machines this wrapper initialises the process
group directly (gloo); with an accelerator it defers to mmengine unchanged.
"""
from __future__ import annotations

import atexit
import functools

import torch
import torch.distributed as torch_dist
from mmengine.dist import utils as dist_utils
from mmengine.device import is_mlu_available, is_musa_available, is_npu_available

__all__ = ['init_dist_pytorch_cpu_aware']

_original = dist_utils._init_dist_pytorch


@functools.wraps(_original)
def init_dist_pytorch_cpu_aware(backend: str, init_backend: str = 'torch', **kwargs) -> None:
    """mmengine's ``_init_dist_pytorch``, without the CUDA call when there is no GPU.

    Raises:
        ValueError: if ``backend='nccl'`` is asked for on a machine without GPUs.
    """
    if (torch.cuda.is_available() or is_mlu_available() or is_npu_available()
            or is_musa_available() or init_backend != 'torch'):
        return _original(backend, init_backend=init_backend, **kwargs)
    if backend == 'nccl':
        raise ValueError("dist backend 'nccl' needs GPUs; on CPU set "
                         "env_cfg = dict(dist_cfg=dict(backend='gloo'))")
    torch_dist.init_process_group(backend=backend, **kwargs)
    # mmseg's tools never destroy the group; a gloo rank that exits with it alive can abort
    # in teardown ("terminate called without an active exception") after finishing its work.
    atexit.register(_destroy_process_group)


def _destroy_process_group() -> None:
    if torch_dist.is_available() and torch_dist.is_initialized():
        torch_dist.destroy_process_group()


dist_utils._init_dist_pytorch = init_dist_pytorch_cpu_aware
