"""Run every head of an mmseg segmentor once, on a random image batch.

The transformations of this package are checked on what every head computes
(the decode heads and the auxiliary heads, which training reads), not only on
the segmentation the model returns.
"""
from __future__ import annotations

from typing import List, Optional, Sequence, Tuple

import numpy as np

import torch
from torch import Tensor, nn

from .trace import tensors_in

__all__ = ['forward_heads', 'probe_input', 'input_size_of', 'random_images', 'normalised',
           'image_channels']

#: Input size used when the model's data preprocessor gives none.
DEFAULT_SIZE = (64, 64)
#: The largest side of the check inputs taken from the training crop.
MAX_SIDE = 128


def forward_heads(model: nn.Module, inputs: Tensor) -> List[Tensor]:
    """The outputs of every decode and auxiliary head of ``model`` on ``inputs``.

    Args:
        model: an mmseg ``EncoderDecoder`` or ``CascadeEncoderDecoder``.
        inputs: a normalised ``(N, C, H, W)`` batch.

    Returns:
        list[Tensor]: the decode head outputs (each stage of a cascade), then the
        auxiliary head outputs.
    """
    features = model.extract_feat(inputs)
    outputs: List[Tensor] = []
    decode = model.decode_head
    if isinstance(decode, nn.ModuleList):
        previous = decode[0](features)
        outputs += tensors_in(previous)
        for head in decode[1:]:
            previous = head(features, previous)
            outputs += tensors_in(previous)
    else:
        outputs += tensors_in(decode(features))
    auxiliary = getattr(model, 'auxiliary_head', None)
    for head in (auxiliary if isinstance(auxiliary, nn.ModuleList) else [auxiliary]):
        if isinstance(head, nn.Module):
            outputs += tensors_in(head(features))
    return outputs


def input_size_of(model: nn.Module) -> Tuple[int, int]:
    """The input size of the checks: the data preprocessor's ``size`` (the training crop),
    each side cut to at most :data:`MAX_SIDE` (a multiple of 32), else 64x64.

    The transformations do not depend on the size; the checks only need every layer to
    run, and a 512x1024 crop would make each pass of a large model take many seconds.
    """
    size = getattr(getattr(model, 'data_preprocessor', None), 'size', None)
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return tuple(min(int(side), MAX_SIDE) for side in size)  # type: ignore[return-value]
    return DEFAULT_SIZE


def probe_input(model: nn.Module, input_size: Optional[Tuple[int, int]] = None, seed: int = 0,
                batch: int = 1) -> Tensor:
    """A random normal batch for ``model`` from a local generator (the global RNG is untouched)."""
    height, width = input_size or input_size_of(model)
    channels = image_channels(model)
    generator = torch.Generator().manual_seed(seed)
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device('cpu')
    return torch.randn(batch, channels, height, width, generator=generator).to(device)


def image_channels(model: nn.Module) -> int:
    """The image channels: from the data preprocessor's ``mean``, else 3."""
    mean = getattr(getattr(model, 'data_preprocessor', None), 'mean', None)
    return int(mean.numel()) if isinstance(mean, Tensor) and mean.numel() > 0 else 3


def random_images(model: nn.Module, input_size: Optional[Tuple[int, int]] = None,
                  count: int = 2, seed: int = 0) -> List[np.ndarray]:
    """``count`` random uint8 ``(H, W, C)`` images, as a pipeline hands them to a cipher."""
    height, width = input_size or input_size_of(model)
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, (height, width, image_channels(model)), dtype=np.uint8)
            for _ in range(count)]


def normalised(model: nn.Module, images: Sequence[np.ndarray]) -> Tensor:
    """``images`` through ``model``'s own data preprocessor, as a batch.

    BGR->RGB and normalisation; a cipher data preprocessor also encrypts them
    with its active key, as it does for the dataloader's images.
    """
    inputs = [torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1))) for img in images]
    return model.data_preprocessor(dict(inputs=inputs), False)['inputs']
