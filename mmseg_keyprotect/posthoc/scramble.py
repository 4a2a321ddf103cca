"""Block scrambling for a key-transformed ViT: which models keep it exact, and the weights.

With block size = patch size, a keyed permutation of the image's blocks
(:class:`~mmseg_keyprotect.transforms.BlockScramble`) is a permutation of the
patch tokens. Permuting the absolute position embedding of the patch tokens
the same way (``pos'[i] = pos[order[i]]``) makes the set of tokens entering
the transformer equal to the plain model's; global attention, layer norms and
MLPs are permutation-equivariant (the class token, attending to the set, is
unchanged), so every output token is the plain model's, in the scrambled
order. :class:`~mmseg_keyprotect.models.block_unscramble.BlockUnscramble`
puts them back at the backbone's outputs, before the neck and heads.

Refused, in one line each: relative position biases (BEiT, MAE: they depend on
where tokens sit), windowed or local attention and convolutions over the token
grid (Swin, Twins), ``slide`` inference (its crops are cut from an image
scrambled as a whole) and input sizes other than the one the position
embedding was trained for (resizing a permuted embedding mixes positions).
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Tuple

import torch
from mmseg.models.backbones import VisionTransformer
from torch import Tensor, nn

from ..keys import SecretKey
from ..transforms.block_scramble import block_scramble_index

__all__ = ['refuse_scrambling', 'scrambling_grid', 'permute_position_embedding',
           'scramble_config', 'POSITION_EMBEDDING']

#: Where the permuted position embedding lives in the segmentor's ``state_dict``.
POSITION_EMBEDDING = 'backbone.pos_embed'

# module class name -> why tokens that change places are computed differently
_REASONS = {
    'WindowMSA': 'its attention is windowed (tokens attend only within local windows of the '
                 'grid) and patches are merged by neighbourhood',
    'LocallyGroupedSelfAttention': 'its attention is windowed (locally grouped: tokens attend '
                                   'only within local windows of the grid)',
    'ConditionalPositionEncoding': 'its position encoding is a convolution over the token grid',
}


def refuse_scrambling(model: nn.Module) -> None:
    """Refuse a model whose outputs block scrambling cannot keep exact.

    Raises:
        ValueError: one line naming why.
    """
    backbone = model.backbone
    what = type(backbone).__name__
    names = {base.__name__ for m in backbone.modules() for base in type(m).__mro__}
    reason = next((text for name, text in _REASONS.items() if name in names), None)
    if reason is None and any(hasattr(m, 'relative_position_bias_table')
                              for m in backbone.modules()):
        reason = ('its attention adds a relative position bias, which depends on where each '
                  'token sits')
    if reason is None and not isinstance(backbone, VisionTransformer):
        reason = ('it is not a transformer with an absolute position embedding and global '
                  'attention (mmseg VisionTransformer: SETR, Segmenter, DPT, ViT-UPerNet)')
    if reason:
        raise ValueError(f'{what}: {reason}, so moving blocks changes what it computes: block '
                         'scrambling cannot be kept exact (use BlockShuffle or BlockNegPos alone)')
    mode = (getattr(model, 'test_cfg', None) or {}).get('mode', 'whole')
    if mode != 'whole':
        raise ValueError(
            f"block scrambling is exact only under mode='whole' inference, got mode={mode!r}: "
            'slide crops are cut from an image scrambled as a whole, so a crop is not a '
            'scrambling of itself')


def scrambling_grid(model: nn.Module, patch: int,
                    input_size: Optional[Tuple[int, int]] = None) -> Tuple[int, int]:
    """The token grid a block-scrambled ``model`` (passed by :func:`refuse_scrambling`) is
    exact at: its backbone's ``img_size`` divided by the patch size.

    Args:
        model: the segmentor.
        patch: its patch size (= the block size).
        input_size: the ``(H, W)`` asked for; must be the backbone's ``img_size``.

    Raises:
        ValueError: one line: ``input_size`` is another size, or the position
            embedding does not match ``img_size``.
    """
    backbone = model.backbone
    what = type(backbone).__name__
    size = tuple(int(s) for s in backbone.img_size)
    grid = (size[0] // patch, size[1] // patch)
    extra = backbone.pos_embed.shape[1] - grid[0] * grid[1]
    if size[0] % patch or size[1] % patch or extra not in (0, 1):
        raise ValueError(f'{what}: img_size {size[0]}x{size[1]} with patch size {patch} does '
                         f'not match its position embedding of {backbone.pos_embed.shape[1]} '
                         'tokens')
    if input_size is not None and tuple(input_size) != size:
        raise ValueError(
            f'{what}: block scrambling is exact only at the size its position embedding was '
            f'made for, {size[0]}x{size[1]} ({grid[0]}x{grid[1]} patches): the embedding is '
            f'permuted for that grid and resizing it mixes positions; got input size '
            f'{input_size[0]}x{input_size[1]}')
    return grid


def permute_position_embedding(state: Dict[str, Tensor], key: SecretKey, patch: int,
                               grid: Tuple[int, int]) -> None:
    """Permute the patch tokens' position embedding in ``state`` for ``key``'s block order,
    in place (the class token's entry, if any, stays first)."""
    position = state[POSITION_EMBEDDING]
    extra = position.shape[1] - grid[0] * grid[1]
    order = torch.from_numpy(block_scramble_index(key, patch, grid))
    position[:, extra:] = position[:, extra:].index_select(1, order)


def scramble_config(patch: int, grid: Tuple[int, int], inner: Optional[str]
                    ) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """The cipher config (without its key) and the ``protection`` fields of a scrambled model."""
    return (dict(type='BlockScramble', block_size=patch, inner=inner),
            dict(block_scramble=dict(block_size=patch, grid=list(grid))))
