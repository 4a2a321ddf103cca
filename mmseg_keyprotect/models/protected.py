"""Registered components that protect an mmseg model with keyed channel permutations.

Three ways to place permutations, all in mmseg's ``MODELS`` registry and all
built on :func:`~mmseg_keyprotect.models.points.attach_permutations` (points
are module paths, see :mod:`mmseg_keyprotect.models.points`):

* a segmentor, :class:`KeyProtectedEncoderDecoder` (and
  :class:`KeyProtectedCascadeEncoderDecoder`), with one extra argument
  ``protection=dict(key=..., points=[...])`` and paths relative to the
  segmentor. A config changes only the type, so every other field (and
  ``--cfg-options model.decode_head.num_classes=...``) is inherited::

      _base_ = ['mmseg::fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py']
      model = dict(type='KeyProtectedEncoderDecoder',
                   protection=dict(key=dict(env='KP_KEY'),
                                   points=['decode_head.conv_seg:input']))

* wrappers ``KeyProtectedBackbone`` / ``KeyProtectedHead`` around a backbone or
  head config (paths relative to it). They are builder functions: they return
  the inner module itself, so its class and ``state_dict`` keys are exactly the
  unprotected ones;
* :class:`ChannelPermutationNeck`, a neck permuting chosen backbone outputs.

None of them adds a ``state_dict`` key: a checkpoint of a protected model loads
into the unprotected model (which then behaves like the *plain* condition).
"""
from __future__ import annotations

import copy
from typing import Any, Dict, Mapping, Sequence, Tuple, Union

from mmseg.models.segmentors import (CascadeEncoderDecoder, DepthEstimator, EncoderDecoder,
                                     MultimodalEncoderDecoder)
from mmseg.registry import MODELS
from torch import Tensor, nn

from ..keys import KeySpec, resolve_key
from ..protection import (Protection, ProtectedBuilder, ProtectedSegmentor, Unsupported,
                          keyed_type)
from .auto_points import resolve_points
from .block_unscramble import attach_block_unscramble
from .permutation import ChannelPermutation
from .points import PointLike, attach_permutations
from .save_guard import guard_parts
from .weight_encryption import attach_weight_encryption, checkpoints_sealed

__all__ = [
    'KeyProtectedSegmentorMixin', 'KeyProtectedEncoderDecoder',
    'KeyProtectedCascadeEncoderDecoder', 'KeyProtectedMultimodalEncoderDecoder',
    'KeyProtectedDepthEstimator', 'build_key_protected_backbone',
    'build_key_protected_head', 'ChannelPermutationNeck'
]

Points = Union[PointLike, Sequence[PointLike]]

class KeyProtectedSegmentorMixin:
    """Adds a ``protection`` argument to a segmentor class.

    Put it before the segmentor in the bases; every other argument goes to the
    segmentor unchanged and the permutations are attached once it is built.

    A protected segmentor cannot be pickled (``torch.save(model)``), nor can any
    part of it (:mod:`~mmseg_keyprotect.models.save_guard`): the pickle
    would hold its weights in clear and what is derived from its key. Save
    checkpoints through mmengine's runner (sealed by
    :class:`~mmseg_keyprotect.engine.hooks.CheckpointSealHook`) or
    :func:`~mmseg_keyprotect.models.weight_encryption.sealed_state_dict`.
    ``copy.deepcopy`` (used by mmengine's EMA) still works: the copy shares the key.

    Args:
        protection (dict): ``dict(key=KEY_SOURCE, points=[...])`` and optionally
            ``prefix=''``; see
            :func:`~mmseg_keyprotect.models.points.attach_permutations`.
            Paths are relative to the segmentor (``'backbone.layer1'``).
            ``points='auto'`` (or a preset, ``'recommended'``,
            ``'backbone-stages'``, ``'classifier-input'``, also inside a list)
            chooses the points from the built model
            (:func:`~mmseg_keyprotect.models.auto_points.resolve_points`).
            ``encrypt_weights=True`` also seals the checkpoints of the run with
            the key and makes the model refuse weights that are not sealed
            with it (:mod:`~mmseg_keyprotect.models.weight_encryption`);
            ``points=[]`` is then allowed (weights encrypted, no permutation).
            ``allow_plaintext_weights=True`` lets such a model load unsealed
            weights (to start from an unencrypted model on purpose).
            ``block_scramble=dict(block_size=PATCH, grid=(ROWS, COLS))`` puts
            the backbone's outputs back in block order for a ViT transformed
            for block-scrambled images
            (:mod:`~mmseg_keyprotect.models.block_unscramble`); ``points=[]``
            is then allowed.
    """

    def __init__(self, *args: Any, protection: Mapping[str, Any], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        protection = dict(protection)
        if protection.get('points'):
            protection['points'] = resolve_points(self, protection['points'])
        encrypt = protection.pop('encrypt_weights', False)
        allow_plaintext = protection.pop('allow_plaintext_weights', False)
        for name, value in (('encrypt_weights', encrypt),
                            ('allow_plaintext_weights', allow_plaintext)):
            if not isinstance(value, bool):
                raise ValueError(f'protection.{name} must be True or False, got {value!r}')
        if allow_plaintext and not encrypt:
            raise ValueError('protection.allow_plaintext_weights=True only applies with '
                             'encrypt_weights=True')
        scramble = protection.pop('block_scramble', None)
        if scramble is not None:
            if not isinstance(scramble, Mapping) or set(scramble) != {'block_size', 'grid'}:
                raise ValueError('protection.block_scramble must be dict(block_size=PATCH, '
                                 f'grid=(ROWS, COLS)), got {scramble!r}')
            attach_block_unscramble(self, protection.get('key'), **scramble)
        if (encrypt or scramble is not None) and not protection.get('points', True):
            protection.pop('points')
        else:
            attach_permutations(self, **protection)
        if encrypt:
            attach_weight_encryption(self, protection.get('key'), allow_plaintext)
        guard_parts(self, warn=encrypt)

    def loss(self, inputs: Tensor, data_samples: Any) -> dict:
        """mmseg's ``loss``; an ``encrypt_weights`` model first checks its checkpoints are sealed.

        Raises:
            RuntimeError: if the model encrypts its weights but no
                ``CheckpointSealHook`` prepared the run: its checkpoints would
                hold the optimizer state in clear.
        """
        if not checkpoints_sealed(self) and Protection.of(self).weight_encryption is not None:
            raise RuntimeError(
                f'{type(self).__name__} has encrypt_weights=True, but nothing seals the '
                'checkpoints of this training run (the optimizer state would be written in '
                "clear): use runner_type='KeyProtectedRunner', the key-condition loops, or "
                "custom_hooks=[dict(type='KeyProtectionHook'), dict(type='CheckpointSealHook')]")
        return super().loss(inputs, data_samples)

    def __reduce_ex__(self, protocol: int):
        raise TypeError(
            f'refusing to pickle {type(self).__name__}: the pickle would hold its weights in '
            'clear and what is derived from its key. Save checkpoints with mmengine\'s runner '
            '(sealed when encrypt_weights=True), or torch.save(sealed_state_dict(model)) '
            '(mmseg_keyprotect.models.weight_encryption)')

    def __deepcopy__(self, memo: Dict[int, Any]) -> 'KeyProtectedSegmentorMixin':
        copied = type(self).__new__(type(self))
        memo[id(self)] = copied
        copied.__dict__.update(copy.deepcopy(self.__dict__, memo))
        return copied


@MODELS.register_module()
@keyed_type(ProtectedSegmentor(plain='EncoderDecoder'))
class KeyProtectedEncoderDecoder(KeyProtectedSegmentorMixin, EncoderDecoder):
    """mmseg's ``EncoderDecoder`` with keyed channel permutations at named points.

    Args:
        protection (dict): ``dict(key=KEY_SOURCE, points=[...])``.
        **kwargs: the arguments of ``EncoderDecoder``.
    """


@MODELS.register_module()
@keyed_type(ProtectedSegmentor(plain='CascadeEncoderDecoder'))
class KeyProtectedCascadeEncoderDecoder(KeyProtectedSegmentorMixin, CascadeEncoderDecoder):
    """mmseg's ``CascadeEncoderDecoder`` with keyed channel permutations at named points.

    Paths into the cascaded heads carry the stage: ``'decode_head.1.conv_seg:input'``.

    Args:
        protection (dict): ``dict(key=KEY_SOURCE, points=[...])``.
        **kwargs: the arguments of ``CascadeEncoderDecoder``.
    """


@MODELS.register_module()
@keyed_type(ProtectedSegmentor(plain='MultimodalEncoderDecoder'))
class KeyProtectedMultimodalEncoderDecoder(KeyProtectedSegmentorMixin, MultimodalEncoderDecoder):
    """mmseg's ``MultimodalEncoderDecoder`` (SAN) with keyed channel permutations at named points.

    ``points='auto'`` places points at the image encoder's outputs and inside the
    mask-classification head (:data:`~mmseg_keyprotect.models.auto_points.MASK_HEAD_POINTS`);
    with ``encrypt_weights=True`` the text encoder's weights are sealed with the rest.

    Args:
        protection (dict): ``dict(key=KEY_SOURCE, points=[...])``.
        **kwargs: the arguments of ``MultimodalEncoderDecoder``.
    """


@MODELS.register_module()
@keyed_type(ProtectedSegmentor(plain='DepthEstimator'))
class KeyProtectedDepthEstimator(KeyProtectedSegmentorMixin, DepthEstimator):
    """mmseg's ``DepthEstimator`` (VPD) with keyed channel permutations at named points.

    It predicts a depth map (``pred_depth_map``) instead of class scores;
    ``points='auto'`` places points at the backbone outputs the depth head reads
    and at the input of the head's last layer (the one with one output channel).
    The key-condition loops report mmseg's ``DepthMetric`` per condition.

    Args:
        protection (dict): ``dict(key=KEY_SOURCE, points=[...])``.
        **kwargs: the arguments of ``DepthEstimator``.
    """


@MODELS.register_module(name='KeyProtectedBackbone')
@keyed_type(ProtectedBuilder(inner='backbone'), name='KeyProtectedBackbone')
def build_key_protected_backbone(backbone: Mapping[str, Any],
                                 points: Points,
                                 key: KeySpec = None,
                                 prefix: str = 'backbone',
                                 **overrides: Any) -> nn.Module:
    """Build a backbone and attach keyed channel permutations inside it.

    Registered as ``KeyProtectedBackbone``::

        backbone=dict(_delete_=True, type='KeyProtectedBackbone',
                      backbone={{_base_.model.backbone}},
                      key=dict(env='KP_KEY'), points=['layer1:input'])

    Args:
        backbone: the config of the backbone to protect.
        points: points relative to the backbone, e.g. ``'layer1:input'`` (stem
            output of a ResNet) or ``'layer4'``.
        key: the secret key or its source.
        prefix: prepended to the paths in the key purposes. The default
            ``'backbone'`` gives the same permutations as the segmentor-level
            points ``'backbone.PATH'``.
        **overrides: fields merged into the backbone config (e.g. the
            ``pretrained`` that ``EncoderDecoder`` sets on its backbone config).

    Returns:
        nn.Module: the backbone itself (its own class and ``state_dict`` keys).
    """
    return _build_and_attach(backbone, overrides, points, key, prefix)


@MODELS.register_module(name='KeyProtectedHead')
@keyed_type(ProtectedBuilder(inner='head'), name='KeyProtectedHead')
def build_key_protected_head(head: Mapping[str, Any],
                             points: Points,
                             key: KeySpec = None,
                             prefix: str = 'decode_head',
                             **overrides: Any) -> nn.Module:
    """Build a decode head and attach keyed channel permutations inside it.

    Registered as ``KeyProtectedHead``; e.g. the paper's Model-6 point::

        decode_head=dict(_delete_=True, type='KeyProtectedHead',
                         head={{_base_.model.decode_head}},
                         key=dict(env='KP_KEY'), points=['conv_seg:input'])

    Args:
        head: the config of the head to protect.
        points: points relative to the head, e.g. ``'conv_seg:input'``.
        key: the secret key or its source.
        prefix: prepended to the paths in the key purposes. The default
            ``'decode_head'`` gives the same permutations as the segmentor-level
            points ``'decode_head.PATH'``; use another one (``'auxiliary_head'``)
            when wrapping a second head.
        **overrides: fields merged into the head config (so
            ``--cfg-options model.decode_head.num_classes=N`` reaches the head).

    Returns:
        nn.Module: the head itself (its own class and ``state_dict`` keys).
    """
    return _build_and_attach(head, overrides, points, key, prefix)


def _build_and_attach(cfg: Mapping[str, Any], overrides: Dict[str, Any], points: Points,
                      key: KeySpec, prefix: str) -> nn.Module:
    module = MODELS.build({**cfg, **overrides})
    attach_permutations(module, points, key, prefix)
    return module


@MODELS.register_module()
@keyed_type(Unsupported('express the points on the segmentor instead'))
class ChannelPermutationNeck(nn.Module):
    """A neck that permutes the channels of chosen backbone outputs.

    Output ``i`` is permuted under the purpose ``'{prefix}:input[i]'`` if ``i``
    is in ``indices`` and passed through otherwise.

    Args:
        in_channels (Sequence[int]): channel count of every backbone output.
        indices (Sequence[int]): which outputs to permute (0-based).
        key (SecretKey | dict): the secret key or its source.
        channel_dim (int): the channel axis of the outputs. Defaults to 1.
        prefix (str): the module path this neck has in the segmentor, used in
            the key purposes. Defaults to ``'neck'``.

    Raises:
        ValueError: if ``indices`` is empty, repeats an output or names one
            that ``in_channels`` does not have, or the key is missing.
    """

    def __init__(self,
                 in_channels: Sequence[int],
                 indices: Sequence[int],
                 key: KeySpec = None,
                 channel_dim: int = 1,
                 prefix: str = 'neck') -> None:
        super().__init__()
        secret = resolve_key(key, type(self).__name__)
        self.in_channels = list(in_channels)
        if not indices or len(set(indices)) != len(indices) or \
                not all(0 <= i < len(self.in_channels) for i in indices):
            raise ValueError(f'{type(self).__name__}: indices must be distinct outputs in '
                             f'[0, {len(self.in_channels)}) for in_channels={self.in_channels}, '
                             f'got {list(indices)}')
        self.perms = nn.ModuleDict({
            str(i): ChannelPermutation(self.in_channels[i], secret, f'{prefix}:input[{i}]',
                                       channel_dim)
            for i in sorted(indices)
        })

    def forward(self, inputs: Sequence[Tensor]) -> Tuple[Tensor, ...]:
        """Permute the chosen backbone outputs.

        Raises:
            ValueError: if the number of inputs differs from ``len(in_channels)``.
        """
        if len(inputs) != len(self.in_channels):
            raise ValueError(f'{type(self).__name__}: expected {len(self.in_channels)} backbone '
                             f'outputs (in_channels={self.in_channels}), got {len(inputs)}')
        return tuple(self.perms[str(i)](x) if str(i) in self.perms else x
                     for i, x in enumerate(inputs))


