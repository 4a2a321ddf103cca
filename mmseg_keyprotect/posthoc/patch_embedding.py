"""Key-transformed patch embeddings: a trained ViT that works on block-encrypted images.

Kiya et al., "Image and Model Transformation with Secret Key for Vision
Transformer" (2022): when a model's first layer is a patch embedding (a
convolution whose kernel equals its stride, no padding), block-wise
encryption of the input with block size = patch size (or a divisor of it) is
an affine map of each patch's values, ``y = P x + t`` (P a signed
permutation: SHF moves values, NP flips ``v -> 255 - v``). mmseg normalises
``z = (y - mean) / std`` per channel (after BGR->RGB), so the embedding of an
encrypted patch is ``W' z + b'`` with

    ``W' = W S^-1 P^T S``, ``b' = b - W S^-1 m - W' S^-1 (t - m)``

(``S = diag(std)``, ``m`` the means, both per position of the block vector)
and equals the plain model's embedding of the plain patch. Every layer after
the patch embedding is unchanged.

The block ciphers are the project's own (:mod:`~mmseg_keyprotect.transforms.block_cipher`):
``P`` and ``t`` are read off the cipher by encrypting probe images, so the
block flattening order (row, column, channel) and the key derivation are the
cipher's by construction. A cipher that is not affine per block (FFX) is refused.
Block scrambling (``'BlockScramble'``, optionally followed by SHF or NP) also
permutes the position embedding and attaches the key-derived unscrambling of
the backbone's outputs (:mod:`.scramble`).

Which backbones qualify: those whose input layer is such a convolution
(mmseg's ``VisionTransformer`` (SETR, Segmenter, DPT, ViT-UPerNet), ``BEiT``,
``MAE``, ``SwinTransformer`` (4x4), ``PCPVT``/``SVT`` (Twins)).
:func:`find_patch_embedding` checks it on the built model and names the
reason when a model does not qualify (overlapping stems: ResNet, MiT, HRNet ...).
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from mmseg.registry import TRANSFORMS
from torch import Tensor, nn

from ..keys import SecretKey
from ..models.block_unscramble import attach_block_unscramble
from .scramble import (POSITION_EMBEDDING, permute_position_embedding, refuse_scrambling,
                       scramble_config, scrambling_grid)
from .trace import record_ops
from .absorb import DEFAULT_ATOL, max_output_difference
from .segmentor import (forward_heads, image_channels, input_size_of, normalised,
                        random_images)

__all__ = ['PatchEmbedding', 'PatchEmbeddingTransformed', 'find_patch_embedding',
           'cipher_affine', 'transform_patch_weights', 'transform_patch_embedding',
           'check_encrypted', 'CIPHERS']

#: The per-block ciphers the transformation accepts (affine per block).
AFFINE_CIPHERS = ('BlockShuffle', 'BlockNegPos')
#: The ciphers the transformation accepts: per-block, block scrambling (ViT only,
#: :mod:`.scramble`), or block scrambling followed by a per-block cipher.
CIPHERS = AFFINE_CIPHERS + ('BlockScramble', ) + tuple(f'BlockScramble+{c}'
                                                       for c in AFFINE_CIPHERS)


@dataclass
class PatchEmbedding:
    """The input layer of a model that qualifies.

    Attributes:
        weight: the name of its weight in the model's ``state_dict``.
        bias: the name of its bias (None: it has none).
        patch_size: its kernel size (= stride).
    """

    weight: str
    bias: Optional[str]
    patch_size: int


def find_patch_embedding(model: nn.Module,
                         input_size: Optional[Tuple[int, int]] = None) -> PatchEmbedding:
    """Find the non-overlapping patch-embedding convolution that reads the image.

    Raises:
        ValueError: one line saying why the model does not qualify.
    """
    height, width = input_size or input_size_of(model)
    image = torch.zeros(1, image_channels(model), height, width)
    names = {id(t): n for n, t in list(model.named_parameters()) + list(model.named_buffers())}
    with torch.no_grad():
        records, _ = record_ops(lambda: model.backbone(image))
    readers = [r for r in records if any(a is image for a in r.args)]
    what = type(model.backbone).__name__
    if not readers:
        raise ValueError(f'{what}: nothing reads the image directly')
    first = readers[0]
    if first.name != 'conv2d':
        raise ValueError(f'{what}: its first operation on the image is {first.name!r}, not a '
                         'convolution')
    weight = first.args[1]
    bias = first.args[2] if len(first.args) > 2 else first.kwargs.get('bias')
    stride, padding, dilation, groups = (_conv_arg(first, i, n, d) for i, n, d in (
        (3, 'stride', 1), (4, 'padding', 0), (5, 'dilation', 1), (6, 'groups', 1)))
    kernel = tuple(weight.shape[2:])
    if len(readers) > 1:
        raise ValueError(f'{what}: the image is read by {len(readers)} operations '
                         f'({", ".join(r.name for r in readers)}), not by one patch embedding')
    if len(set(kernel)) != 1 or _pair(stride) != kernel or any(_pair(padding)) \
            or _pair(dilation) != (1, 1) or groups != 1:
        raise ValueError(
            f'{what}: its input layer is a {kernel[0]}x{kernel[-1]} convolution with stride '
            f'{_pair(stride)} and padding {_pair(padding)}: its windows overlap or are padded, '
            'so a block cipher cannot be moved into it exactly (needs kernel = stride, no '
            'padding)')
    if height % kernel[0] or width % kernel[0]:
        raise ValueError(f'{what}: input {height}x{width} is not a multiple of the patch size '
                         f'{kernel[0]}')
    return PatchEmbedding(names[id(weight)], None if bias is None else names[id(bias)],
                          kernel[0])


def _conv_arg(record, index: int, name: str, default: Any) -> Any:
    if len(record.args) > index:
        return record.args[index]
    return record.kwargs.get(name, default)


def _pair(value: Any) -> Tuple[int, int]:
    if isinstance(value, (tuple, list)):
        return tuple(int(v) for v in value) if len(value) == 2 else (int(value[0]), ) * 2
    return (int(value), int(value))


def cipher_affine(cipher: Any, patch: int, channels: int) -> Tuple[np.ndarray, np.ndarray]:
    """``(P, t)`` with ``encrypt(x) == P x + t`` for one ``patch x patch x C`` block.

    Block vectors are in the cipher's (row, column, channel) order. Read off
    the cipher by encrypting one image holding a zero block and every unit
    block side by side, then checked on a random image.

    Raises:
        ValueError: the cipher's block size does not divide ``patch``, or the
            cipher is not affine per block with a signed permutation (FFX).
    """
    name = type(cipher).__name__
    if patch % cipher.block_size:
        raise ValueError(f'{name}: block size {cipher.block_size} does not divide the patch '
                         f'size {patch}: encrypted blocks would straddle patches')
    n = patch * patch * channels
    units = np.concatenate([np.zeros((1, n), np.uint8), np.eye(n, dtype=np.uint8)])
    image = units.reshape(n + 1, patch, patch, channels).transpose(1, 0, 2, 3).reshape(
        patch, (n + 1) * patch, channels)
    encrypted = cipher.encrypt(image).astype(np.float64)
    blocks = encrypted.reshape(patch, n + 1, patch, channels).transpose(1, 0, 2, 3).reshape(
        n + 1, n)
    shift = blocks[0]
    matrix = (blocks[1:] - shift).T  # column j: the image of unit vector j
    rng = np.random.default_rng(0)
    sample = rng.integers(0, 256, (patch, patch, channels), dtype=np.uint8)
    expected = matrix @ sample.reshape(-1).astype(np.float64) + shift
    signed = (np.abs(matrix).sum(0) == 1).all() and (np.abs(matrix).sum(1) == 1).all()
    if not signed or not np.allclose(cipher.encrypt(sample).reshape(-1), expected):
        raise ValueError(f'{name} is not an affine permutation of each block (v -> +-v + c): '
                         'it cannot be moved into the patch embedding; use '
                         f'{" or ".join(AFFINE_CIPHERS)}')
    return matrix, shift


def transform_patch_weights(weight: Tensor, bias: Optional[Tensor], matrix: np.ndarray,
                            shift: np.ndarray, mean: Sequence[float], std: Sequence[float],
                            bgr_to_rgb: bool) -> Tuple[Tensor, Tensor]:
    """The patch-embedding weight and bias that read encrypted, normalised patches.

    Args:
        weight: ``(D, C, p, p)`` conv weight (channels in the model's order).
        bias: ``(D,)`` or None.
        matrix, shift: the cipher's ``(P, t)`` (:func:`cipher_affine`), in the
            cipher's (row, column, image channel) order.
        mean, std: the data preprocessor's normalisation (model channel order).
        bgr_to_rgb: whether the preprocessor flips the channels after the cipher.

    Returns:
        (weight, bias): float tensors of the input's dtype; bias is never None.
    """
    d, c, p, _ = weight.shape
    order = torch.arange(c - 1, -1, -1) if bgr_to_rgb and c == 3 else torch.arange(c)
    # block vector (row, col, image channel) -> conv weight
    w = weight.detach().double()[:, order].permute(0, 2, 3, 1).reshape(d, -1)
    m = torch.as_tensor(mean, dtype=torch.float64)[order].repeat(p * p)
    s = torch.as_tensor(std, dtype=torch.float64)[order].repeat(p * p)
    P = torch.as_tensor(matrix, dtype=torch.float64)
    t = torch.as_tensor(shift, dtype=torch.float64)
    w_new = (w / s) @ P.T * s
    b = torch.zeros(d, dtype=torch.float64) if bias is None else bias.detach().double()
    b_new = b - w @ (m / s) - w_new @ ((t - m) / s)
    inverse = torch.argsort(order)
    w_new = w_new.reshape(d, p, p, c).permute(0, 3, 1, 2)[:, inverse]
    return w_new.to(weight.dtype).contiguous(), b_new.to(weight.dtype)


@dataclass
class PatchEmbeddingTransformed:
    """What :func:`transform_patch_embedding` made.

    Attributes:
        state_dict: every weight, the patch embedding transformed.
        points: the transformed layers and parameters (their names).
        cipher: the cipher config without its key (``type``, ``block_size``).
        max_difference: the check's largest |output difference|.
        protection: the fields the segmentor's ``protection`` gains (block
            scrambling: ``block_scramble=dict(block_size, grid)``).
    """

    state_dict: Dict[str, Tensor]
    points: List[str]
    cipher: Dict[str, Any]
    max_difference: float
    protection: Dict[str, Any] = field(default_factory=dict)

    def model_overrides(self, key_source: Mapping[str, Any]) -> Dict[str, Any]:
        """The ``model`` fields that add the cipher (in the data preprocessor)."""
        cipher = dict(self.cipher, key=dict(key_source))
        return dict(data_preprocessor=dict(type='BlockCipherSegDataPreProcessor', cipher=cipher))


def transform_patch_embedding(model: nn.Module, key: SecretKey, cfg: Any = None,
                              cipher: str = 'BlockShuffle', block_size: Optional[int] = None,
                              input_size: Optional[Tuple[int, int]] = None,
                              atol: float = DEFAULT_ATOL) -> PatchEmbeddingTransformed:
    """Transform a trained model's patch embedding for images encrypted with ``key``.

    Args:
        model: the trained segmentor (left unchanged).
        key: the key of the cipher.
        cfg: unused; the normalisation is read from ``model.data_preprocessor``.
        cipher: one of :data:`CIPHERS`: ``'BlockShuffle'``, ``'BlockNegPos'``,
            ``'BlockScramble'`` (blocks change places; the position embedding
            is permuted to match, :mod:`.scramble`) or ``'BlockScramble+X'``
            (scrambling, then ``X`` within each block).
        block_size: the cipher's block size; default the patch size (block
            scrambling needs the patch size).
        input_size: ``(H, W)`` of the check; default the training crop (block
            scrambling: the backbone's ``img_size``, the only size it is exact at).
        atol: the largest output difference accepted.

    Returns:
        PatchEmbeddingTransformed: the new weights and the cipher to configure.

    Raises:
        ValueError: the model does not qualify (one line: why), an unknown
            cipher, or the check fails.
    """
    if cipher not in CIPHERS:
        raise ValueError(f'cipher must be one of {CIPHERS}, got {cipher!r}')
    scrambled = cipher.startswith('BlockScramble')
    inner = cipher.partition('+')[2] if scrambled else cipher
    if scrambled:
        refuse_scrambling(model)
        size = tuple(int(s) for s in model.backbone.img_size)
        grid = scrambling_grid(model, find_patch_embedding(model, size).patch_size, input_size)
        input_size = size
    embedding = find_patch_embedding(model, input_size)
    block = block_size or embedding.patch_size
    if scrambled and block != embedding.patch_size:
        raise ValueError(f'block scrambling needs block size = patch size '
                         f'{embedding.patch_size}, got {block}')
    state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    points = []
    if inner:
        _move_block_cipher(model, state, embedding, TRANSFORMS.build(
            dict(type=inner, block_size=block, key=key)))
        points.append(embedding.weight.rsplit('.', 1)[0])
    if scrambled:
        permute_position_embedding(state, key, block, grid)
        points.append(POSITION_EMBEDDING)
        cipher_cfg, protection = scramble_config(block, grid, inner or None)
    else:
        cipher_cfg, protection = dict(type=cipher, block_size=block), {}
    built = TRANSFORMS.build(dict(cipher_cfg, key=key))
    transformed = _copy_with(model, state)
    if scrambled:
        attach_block_unscramble(transformed, key, **protection['block_scramble'])
    difference = check_encrypted(model, transformed, built, input_size, atol)
    return PatchEmbeddingTransformed(state, points, cipher_cfg, difference, protection)


def _move_block_cipher(model: nn.Module, state: Dict[str, Tensor], embedding: PatchEmbedding,
                       built: Any) -> None:
    """Transform the patch embedding in ``state`` (in place) for the per-block cipher ``built``."""
    sink = embedding.bias or _position_sink(model, embedding)
    pre = model.data_preprocessor
    matrix, shift = cipher_affine(built, embedding.patch_size, image_channels(model))
    old_bias = state[embedding.bias] if embedding.bias else None
    weight, bias = transform_patch_weights(
        state[embedding.weight], old_bias, matrix, shift, pre.mean.flatten().tolist(),
        pre.std.flatten().tolist(), bool(getattr(pre, 'channel_conversion', False)))
    state[embedding.weight] = weight
    if embedding.bias:
        state[embedding.bias] = bias
    else:  # the constant shift of every patch token goes into their position embeddings
        extra = 1 if getattr(model.backbone, 'cls_token', None) is not None else 0
        state[sink][:, extra:] += bias.to(state[sink].dtype)


def _position_sink(model: nn.Module, embedding: PatchEmbedding) -> str:
    """Where a bias-free patch embedding's shift goes: the position embedding of the patch
    tokens, when the embedding (no norm) feeds it directly (mmseg's ``VisionTransformer``
    with ``patch_bias=False``, ``patch_norm=False``).

    Raises:
        ValueError: there is no such position embedding.
    """
    backbone = model.backbone
    patch_embed = getattr(backbone, 'patch_embed', None)
    pos_embed = getattr(backbone, 'pos_embed', None)
    if not embedding.weight.startswith('backbone.patch_embed.') or \
            getattr(patch_embed, 'norm', None) is not None or \
            not isinstance(pos_embed, nn.Parameter):
        raise ValueError(f'{embedding.weight}: the patch embedding has no bias, and no position '
                         "embedding directly after it, to absorb the cipher's shift")
    return 'backbone.pos_embed'


def _copy_with(model: nn.Module, state: Mapping[str, Tensor]) -> nn.Module:
    transformed = copy.deepcopy(model)
    transformed.load_state_dict(state)
    return transformed


def check_encrypted(model: nn.Module, transformed: nn.Module, cipher: Any,
                    input_size: Optional[Tuple[int, int]] = None,
                    atol: float = DEFAULT_ATOL) -> float:
    """Compare the model on plain images with the transformed model on encrypted ones.

    Raises:
        ValueError: the largest |output difference| is above ``atol``.
    """
    images = random_images(model, input_size)
    encrypted = [cipher.encrypt(img) for img in images]
    with torch.no_grad():
        expected = forward_heads(model.eval(), normalised(model, images))
        got = forward_heads(transformed.eval(), normalised(model, encrypted))
    difference = max_output_difference(expected, got)
    if not difference <= atol:
        raise ValueError(f'the transformed patch embedding is not exact: max |output '
                         f'difference| {difference:.3g} > {atol:g}')
    return difference
