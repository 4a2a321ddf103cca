"""Keyed, spatially invariant permutation of the channels of a feature map.

The transformation of "Access Control Using Spatially Invariant Permutation of
Feature Maps for Semantic Segmentation Models" (Fig. 4): a feature map ``x``
with ``C`` channels becomes ``x'`` with ``x'[:, i] = x[:, alpha_i]``, where
``alpha`` is a permutation of ``range(C)`` derived from the secret key. Every
spatial position (or token) is permuted the same way, so the spatial layout a
segmentation model must predict is untouched.

The index is derived from the key under a purpose string (one per point of the
network), held as a *non-persistent* buffer and therefore never written to a
``state_dict`` or checkpoint.

Example:
    >>> perm = ChannelPermutation(4, key=dict(env='KP_KEY'),  # doctest: +SKIP
    ...                           purpose='backbone.layer1:output')
    >>> y = perm(torch.randn(2, 4, 8, 8))  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from mmseg.registry import MODELS
from torch import Tensor

from ..keyed import FeaturePermutation
from ..keys import KeySpec, SecretKey
from .keyed_index import KeyedIndexModule

__all__ = ['ChannelPermutation', 'channel_permutation_index']


def channel_permutation_index(key: SecretKey, purpose: str, num_channels: int) -> Tensor:
    """The keyed channel order ``alpha`` for ``purpose`` and ``num_channels``.

    Args:
        key: the key to derive from.
        purpose: names the point of the network; each point gets its own order.
        num_channels: the number of channels ``C``.

    Returns:
        Tensor: int64 tensor holding a permutation of ``range(num_channels)``.
    """
    return torch.from_numpy(key.permutation(f'channel/{purpose}/c={num_channels}', num_channels))


@MODELS.register_module()
class ChannelPermutation(KeyedIndexModule, FeaturePermutation):
    """Permute the channel axis of a feature map with a secret key.

    ``out.select(channel_dim, i) == x.select(channel_dim, alpha[i])`` for every
    ``i``, with ``alpha`` from :func:`channel_permutation_index`. With the plain
    condition (``use_key(None)``) the module is the identity; with another key
    it applies that key's permutation.

    Args:
        num_channels (int, optional): the channel count ``C``. ``None`` infers it
            from the first input (like ``nn.LazyLinear``); later inputs must match.
        key (SecretKey | dict): the secret key or its source,
            ``dict(file=PATH)``, ``dict(env=NAME)`` or ``dict(seed=INT)``.
        purpose (str): the name of the point this permutation sits at, e.g.
            ``'backbone.layer1:output'``; different purposes give independent
            permutations.
        channel_dim (int): the channel axis: 1 for ``(N, C, H, W)`` feature maps,
            -1 for ``(N, L, C)`` token features. Defaults to 1.

    Raises:
        ValueError: if ``num_channels`` is not a positive integer or ``None``,
            ``purpose`` is empty or the key source is missing or malformed
            (an unset variable or missing file raises as in :func:`resolve_key`).
    """

    def __init__(self,
                 num_channels: Optional[int],
                 key: KeySpec,
                 purpose: str,
                 channel_dim: int = 1) -> None:
        super().__init__()
        if num_channels is not None and (isinstance(num_channels, bool)
                                         or not isinstance(num_channels, int) or num_channels < 1):
            raise ValueError(f'num_channels must be None or an integer >= 1, got {num_channels!r}')
        if not isinstance(purpose, str) or not purpose:
            raise ValueError(f'purpose must be a non-empty string, got {purpose!r}')
        if isinstance(channel_dim, bool) or not isinstance(channel_dim, int):
            raise ValueError(f'channel_dim must be an integer, got {channel_dim!r}')
        self.num_channels = num_channels
        self.purpose = purpose
        self.channel_dim = channel_dim
        self._init_index(key)

    def derived_tables(self, key: SecretKey) -> Optional[bytes]:
        """The permutation index ``key`` gives (``None`` until the channel count is known)."""
        if self.num_channels is None:
            return None
        return channel_permutation_index(key, self.purpose, self.num_channels).numpy().tobytes()

    def forward(self, x: Tensor) -> Tensor:
        """Permute the channels of ``x`` with the active key (plain: return ``x``).

        Raises:
            TypeError: if ``x`` is not a tensor.
            ValueError: if ``x`` has no ``channel_dim`` axis or the wrong channel count.
        """
        channels = self._check_input(x)
        if self.num_channels is None:
            self.num_channels = channels
            self._on_key_change()
        if self.index is None:
            return x
        if self.index.device != x.device:
            self._derive_index(x.device)
        return x.index_select(self.channel_dim, self.index)

    def _check_input(self, x: Tensor) -> int:
        """Return the channel count of ``x`` after checking it against :attr:`num_channels`."""
        if not isinstance(x, Tensor):
            raise TypeError(f'{self._name()} expects a tensor, got {type(x).__name__}')
        dim = self.channel_dim
        if not -x.dim() <= dim < x.dim():
            raise ValueError(f'{self._name()}: input of shape {tuple(x.shape)} has no channel '
                             f'axis {dim}')
        channels = x.shape[dim]
        if self.num_channels is not None and channels != self.num_channels:
            raise ValueError(f'{self._name()}: expected {self.num_channels} channels on axis '
                             f'{dim}, got {channels} (input of shape {tuple(x.shape)})')
        return channels

    def index_for(self, key: SecretKey) -> Optional[Tensor]:
        """The permutation ``key`` gives (None until the channel count is known)."""
        if self.num_channels is None:
            return None
        return channel_permutation_index(key, self.purpose, self.num_channels)

    def describe(self) -> Dict[str, Any]:
        """``{'type': CLASS NAME, 'point': PURPOSE, 'key': FINGERPRINT}``."""
        return {**super().describe(), 'point': self.purpose}

    def _name(self) -> str:
        return f'{type(self).__name__}({self.purpose!r})'

    def extra_repr(self) -> str:
        return (f'num_channels={self.num_channels}, channel_dim={self.channel_dim}, '
                f'purpose={self.purpose!r}, {self._key_repr()}')
