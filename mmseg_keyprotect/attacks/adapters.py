"""Trainable modules an attacker inserts at a protected point of a stolen model.

The attacker knows the method and the protected points (paper 2's threat
model) but not the key, and holds a few labelled images. At each point the
stolen network expects the keyed transform of the tensor it gets without the
key; these modules learn that transform:

* :class:`ChannelAdapter`: a 1x1 convolution (a linear map of the channels plus
  a bias), initialised to the identity. It can represent any channel
  permutation exactly.
* :class:`SinkhornPermutation`: a soft permutation matrix, the Sinkhorn
  normalisation of learnt logits (Mena et al., 2018, "Learning latent
  permutations with Gumbel-Sinkhorn networks"); :meth:`~SinkhornPermutation.hard_index`
  rounds it to a permutation with the Hungarian algorithm.
* :class:`BlockAdapter`: runs either of them on the MxM blocks of an image
  (``pixel_unshuffle``: each block's ``M*M*C`` values become channels), the
  attack on block ciphers, whose keyed operation is the same for every block.

Each is a :class:`~mmseg_keyprotect.models.points.PointHook`, so it is placed
with the same point syntax as the protection itself.
"""
from __future__ import annotations

from typing import Optional

import numpy as np
import torch
import torch.nn.functional as F
from scipy.optimize import linear_sum_assignment
from torch import Tensor, nn

from ..models.points import PointHook, PointSpec

__all__ = ['ChannelAdapter', 'SinkhornPermutation', 'BlockAdapter', 'build_point_adapter']


def _move_channels_last(x: Tensor, channel_dim: int) -> Tensor:
    return x if channel_dim in (-1, x.dim() - 1) else x.movedim(channel_dim, -1)


def _move_channels_back(x: Tensor, channel_dim: int) -> Tensor:
    return x if channel_dim in (-1, x.dim() - 1) else x.movedim(-1, channel_dim)


class _ChannelMap(nn.Module):
    """A learnt map of the channel axis, built lazily on the first forward.

    Args:
        channels: the channel count, or None to take it from the first input.
        channel_dim: the channel axis (1 for NCHW, -1 for NLC).
    """

    def __init__(self, channels: Optional[int] = None, channel_dim: int = 1) -> None:
        super().__init__()
        self.channel_dim = channel_dim
        self.channels = channels
        if channels is not None:
            self._build(channels)

    def _build(self, channels: int) -> None:
        raise NotImplementedError

    def matrix(self) -> Tensor:
        """The (C_out, C_in) matrix applied to the channels."""
        raise NotImplementedError

    def bias(self) -> Optional[Tensor]:
        return None

    def forward(self, x: Tensor) -> Tensor:
        channels = x.shape[self.channel_dim]
        if self.channels is None:
            self.channels = channels
            self._build(channels)
            self.to(x.device)
        elif channels != self.channels:
            raise ValueError(f'{type(self).__name__} was built for {self.channels} channels, '
                             f'got a tensor of shape {tuple(x.shape)}')
        out = _move_channels_last(x, self.channel_dim) @ self.matrix().t()
        if self.bias() is not None:
            out = out + self.bias()
        return _move_channels_back(out, self.channel_dim)


class ChannelAdapter(_ChannelMap):
    """A 1x1 convolution over the channel axis, initialised to the identity.

    Args:
        channels: the channel count, or None to take it from the first input
            (then build the optimizer after a first forward).
        channel_dim: the channel axis (1 for NCHW, -1 for NLC).
    """

    def _build(self, channels: int) -> None:
        self.weight = nn.Parameter(torch.eye(channels))
        self.offset = nn.Parameter(torch.zeros(channels))

    def matrix(self) -> Tensor:
        return self.weight

    def bias(self) -> Tensor:
        return self.offset


class SinkhornPermutation(_ChannelMap):
    """A soft channel permutation: Sinkhorn-normalised ``exp(logits / tau)``.

    ``out[:, i] = sum_j P[i, j] x[:, j]``; with a hard permutation
    ``P[i, alpha_i] = 1`` this is ``x[:, alpha_i]``, the form of
    :class:`~mmseg_keyprotect.models.permutation.ChannelPermutation`.

    Args:
        channels: the channel count, or None to take it from the first input.
        channel_dim: the channel axis.
        tau: the temperature; smaller is closer to a hard permutation.
        iterations: Sinkhorn row/column normalisations per forward.
        init_noise: standard deviation of the logits' random initialisation
            (breaks the symmetry of the uniform matrix).
        seed: seed of that initialisation.
    """

    def __init__(self,
                 channels: Optional[int] = None,
                 channel_dim: int = 1,
                 tau: float = 0.05,
                 iterations: int = 20,
                 init_noise: float = 0.01,
                 seed: int = 0) -> None:
        if tau <= 0 or iterations < 1:
            raise ValueError(f'tau must be > 0 and iterations >= 1, got tau={tau!r}, '
                             f'iterations={iterations!r}')
        self.tau = tau
        self.iterations = iterations
        self.init_noise = init_noise
        self.seed = seed
        self.hard: Optional[Tensor] = None
        super().__init__(channels, channel_dim)

    def _build(self, channels: int) -> None:
        generator = torch.Generator().manual_seed(self.seed)
        self.logits = nn.Parameter(self.init_noise * torch.randn(channels, channels,
                                                                 generator=generator))

    def soft_matrix(self) -> Tensor:
        """The doubly stochastic matrix (log-domain Sinkhorn)."""
        log_p = self.logits / self.tau
        for _ in range(self.iterations):
            log_p = log_p - torch.logsumexp(log_p, dim=1, keepdim=True)
            log_p = log_p - torch.logsumexp(log_p, dim=0, keepdim=True)
        return log_p.exp()

    def matrix(self) -> Tensor:
        if self.hard is not None:
            return F.one_hot(self.hard, self.channels).to(self.logits.dtype)
        return self.soft_matrix()

    @torch.no_grad()
    def hard_index(self) -> Tensor:
        """Round to a permutation: ``alpha`` with ``out[:, i] = x[:, alpha_i]``.

        Non-finite entries (training diverged, e.g. on scrambled weights) count as 0,
        so a permutation is always returned.
        """
        soft = torch.nan_to_num(self.soft_matrix(), nan=0.0, posinf=0.0, neginf=0.0)
        rows, cols = linear_sum_assignment(-soft.cpu().numpy())
        index = np.empty_like(cols)
        index[rows] = cols
        return torch.as_tensor(index, device=self.logits.device)

    def harden(self) -> Tensor:
        """Use the rounded permutation from now on; returns it."""
        self.hard = self.hard_index()
        return self.hard


class BlockAdapter(nn.Module):
    """Apply a channel map to the MxM blocks of an ``(N, C, H, W)`` image.

    ``pixel_unshuffle`` turns each block into ``C*M*M`` channels, ``inner``
    maps them, ``pixel_shuffle`` puts the blocks back.

    Args:
        block_size: M.
        inner: a :class:`ChannelAdapter` or :class:`SinkhornPermutation`
            (``channel_dim=1``).
    """

    def __init__(self, block_size: int, inner: _ChannelMap) -> None:
        super().__init__()
        if block_size < 1:
            raise ValueError(f'block_size must be >= 1, got {block_size!r}')
        self.block_size = block_size
        self.inner = inner

    def forward(self, x: Tensor) -> Tensor:
        m = self.block_size
        if x.dim() != 4 or x.shape[-2] % m or x.shape[-1] % m:
            raise ValueError(f'BlockAdapter with block_size={m} needs (N, C, H, W) with H and '
                             f'W multiples of {m}, got shape {tuple(x.shape)}')
        return F.pixel_shuffle(self.inner(F.pixel_unshuffle(x, m)), m)


class _PointModule(PointHook, nn.Module):
    """Holds an attack module and applies it at a point (keeps the hook logic in one place)."""

    def __init__(self, point: PointSpec, module: nn.Module) -> None:
        super().__init__()
        self.point = point
        self.point_name = point.name()
        self.module = module

    def forward(self, x: Tensor) -> Tensor:
        return self.module(x)


def build_point_adapter(point: PointSpec,
                        kind: str,
                        block_size: Optional[int] = None,
                        **kwargs) -> nn.Module:
    """An attack module for ``point``.

    Args:
        point: where it goes.
        kind: ``'adapter'`` (:class:`ChannelAdapter`) or ``'sinkhorn'``
            (:class:`SinkhornPermutation`).
        block_size: if given, the map acts on MxM blocks (:class:`BlockAdapter`),
            for a block cipher at the network's input.
        **kwargs: passed to :class:`SinkhornPermutation`.

    Returns:
        nn.Module: a module with ``register_on(target_module)``.
    """
    kinds = {'adapter': ChannelAdapter, 'sinkhorn': SinkhornPermutation}
    if kind not in kinds:
        raise ValueError(f'unknown adapter kind {kind!r}; choose one of {sorted(kinds)}')
    if kind == 'adapter' and kwargs:
        raise ValueError(f'adapter takes no options, got {sorted(kwargs)}')
    channel_dim = 1 if block_size else point.channel_dim
    channels = None if block_size else point.channels
    inner = kinds[kind](channels, channel_dim, **kwargs)
    return _PointModule(point, BlockAdapter(block_size, inner) if block_size else inner)
