"""Put the feature maps of a block-scrambled ViT back in the image's block order.

With block size = patch size, scrambling the image's blocks
(:class:`~mmseg_keyprotect.transforms.BlockScramble`) scrambles the patch
tokens. A ViT with an absolute position embedding permuted the same way and
global attention (permutation-equivariant) then computes the plain model's
tokens, in the scrambled order. :class:`BlockUnscramble` sits on the
backbone's output (a forward hook) and moves every token of every feature map
the neck and heads read back to its place, so the heads see the plain layout
and the segmentation map lines up with the (unchanged) labels.

The block order is derived from the key at build time (the same derivation as
the cipher's, :func:`~mmseg_keyprotect.transforms.block_scramble.block_scramble_index`),
held in a non-persistent buffer: never in a ``state_dict`` or checkpoint. The
module is a keyed part of the segmentor: the key-condition loops switch it
with the cipher (plain: it does nothing; an incorrect key: that key's order).
"""
from __future__ import annotations

from typing import Any, Dict, Sequence, Tuple

import torch
from torch import Tensor, nn

from ..keys import KeySpec, SecretKey
from ..transforms.block_scramble import block_scramble_index
from .keyed_index import KeyedIndexModule

__all__ = ['BlockUnscramble', 'attach_block_unscramble', 'UNSCRAMBLE_ATTR']

#: Attribute of the segmentor that holds its :class:`BlockUnscramble`.
UNSCRAMBLE_ATTR = 'keyprotect_unscramble'


class BlockUnscramble(KeyedIndexModule):
    """Un-permute the token grid of a backbone's outputs with a secret key.

    Every 4-D ``(N, C, rows, cols)`` tensor of the backbone's output (a tuple of
    stages; a ``[feature map, cls token]`` pair as ViT's ``output_cls_token``
    gives) has its ``rows x cols`` positions put back in raster order; other
    tensors (a class token) are left as they are.

    Args:
        key (SecretKey | dict): the secret key or its source.
        block_size (int): the scrambling's block size (= the patch size).
        grid (Sequence[int]): ``(rows, cols)`` of the token grid the model was
            transformed for (the training input divided by the patch size).

    Raises:
        ValueError: a grid or block size that is not positive integers.
    """

    def __init__(self, key: KeySpec, block_size: int, grid: Sequence[int]) -> None:
        super().__init__()
        if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
            raise ValueError(f'BlockUnscramble: block_size must be an integer >= 1, '
                             f'got {block_size!r}')
        if not isinstance(grid, (list, tuple)) or len(grid) != 2 or not all(
                isinstance(g, int) and not isinstance(g, bool) and g >= 1 for g in grid):
            raise ValueError(f'BlockUnscramble: grid must be (rows, cols) of integers >= 1, '
                             f'got {grid!r}')
        self.block_size = block_size
        self.grid: Tuple[int, int] = (int(grid[0]), int(grid[1]))
        self._init_index(key)

    def index_for(self, key: SecretKey) -> Tensor:
        """The gather index that puts ``key``'s scrambled grid back in raster order."""
        order = torch.from_numpy(block_scramble_index(key, self.block_size, self.grid))
        return torch.argsort(order)

    def derived_tables(self, key: SecretKey) -> bytes:
        """The inverse block order ``key`` gives."""
        return self.index_for(key).numpy().tobytes()

    def forward(self, outputs: Any) -> Any:
        """The backbone's ``outputs`` with every feature map's grid un-permuted.

        Raises:
            ValueError: a feature map whose grid is not the one the model was
                transformed for (the position embedding is permuted for that grid only).
        """
        if self.index is None:
            return outputs
        if isinstance(outputs, (tuple, list)):
            return type(outputs)(self.forward(item) for item in outputs)
        if not isinstance(outputs, Tensor) or outputs.dim() != 4:
            return outputs
        n, c, rows, cols = outputs.shape
        if (rows, cols) != self.grid:
            raise ValueError(
                f'BlockUnscramble: a backbone output has a {rows}x{cols} token grid, but the '
                f'model was block-scrambled for {self.grid[0]}x{self.grid[1]} (inputs of '
                f'{self.grid[0] * self.block_size}x{self.grid[1] * self.block_size}): resize '
                "the images to that size and use mode='whole' inference")
        if self.index.device != outputs.device:
            self._derive_index(outputs.device)
        return outputs.flatten(2).index_select(2, self.index).view(n, c, rows, cols)

    def output_hook(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> Any:
        """Forward hook on the backbone."""
        return self(output)

    def describe(self) -> Dict[str, Any]:
        """``{'type': 'BlockUnscramble', 'grid': 'RxC', 'patch': M, 'key': FINGERPRINT}``."""
        return {**super().describe(), 'grid': f'{self.grid[0]}x{self.grid[1]}',
                'patch': self.block_size}

    def extra_repr(self) -> str:
        return f'block_size={self.block_size}, grid={self.grid}, {self._key_repr()}'


def attach_block_unscramble(root: nn.Module, key: KeySpec, block_size: int,
                            grid: Sequence[int]) -> BlockUnscramble:
    """Put a :class:`BlockUnscramble` on ``root.backbone``'s output.

    It becomes the child ``root.keyprotect_unscramble`` (found for key
    switching, moved by ``.to()``, nothing added to the ``state_dict``).

    Raises:
        ValueError: ``root`` has no backbone, or already has one attached.
    """
    backbone = getattr(root, 'backbone', None)
    if not isinstance(backbone, nn.Module):
        raise ValueError(f'block scrambling: {type(root).__name__} has no backbone to '
                         'unscramble the outputs of')
    if hasattr(root, UNSCRAMBLE_ATTR):
        raise ValueError(f'{type(root).__name__} already has a block unscrambling attached')
    unscramble = BlockUnscramble(key, block_size, list(grid))
    backbone.register_forward_hook(unscramble.output_hook)
    setattr(root, UNSCRAMBLE_ATTR, unscramble)
    return unscramble
