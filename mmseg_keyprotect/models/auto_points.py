"""Permutation points chosen from a built segmentor: ``points='auto'`` and named presets.

Instead of module paths, ``protection=dict(points=...)`` may name a preset:

* ``'backbone-stages'``: every backbone output that feeds the neck or a head
  (with a neck: all of them; without: the ``in_index`` of every decode and
  auxiliary head);
* ``'classifier-input'``: the input of the classifier of every decode and
  auxiliary head (``conv_seg``, or the last convolution/linear layer called
  that maps to the head's ``out_channels``);
* ``'mask-classification'``: in mask-classification heads (MaskFormer,
  Mask2Former, K-Net's kernel update heads, Segmenter's mask transformer, SAN), the tensors the masks and
  their classes are computed from (:data:`MASK_HEAD_POINTS` says which and why);
* ``'recommended'`` (also ``'auto'``): all three.

A list may mix preset names and explicit points
(``['backbone-stages', 'backbone.layer1:input']``).

The points are found by tracing a forward pass of the model on a small
random input, in eval mode and in train mode (no gradients, a local random
generator, buffers restored, so nothing of the model or the global RNG
changes); a point must exist in both modes (some models return extra
outputs when training). A backbone output is placed, in this
order of preference, at the shallowest backbone submodule (called once) that
returns that very tensor (``'backbone.layer3'``, or ``'backbone.stage4:output[2]'``
for an element of a returned list), then at a submodule whose ``(N, L, C)`` /
``(N, H, W, C)`` output holds the same values with channels last (token
features, ``channel_dim=-1``), and otherwise at the backbone's own output
(``'backbone:output[i]'``). A point inside the backbone also changes the
stages after it, so the permutation reaches both the next stage and the heads.
The channel axis of a classifier input comes from the layer (``nn.Linear``:
-1, convolutions: 1).

The pure selection functions (:func:`backbone_stage_points`,
:func:`classifier_input_points`) read a :class:`ModelTrace` and can be tested
without mmseg; :func:`trace_segmentor` makes one from a model and
:func:`resolve_points` puts it together.
"""
from __future__ import annotations

import difflib
import logging
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.logging import print_log
from torch import Tensor, nn

from .points import PointLike, PointSpec

__all__ = [
    'PRESETS', 'BACKBONE_ATTRS', 'MASK_HEAD_POINTS', 'MaskHeadPoint', 'ModuleCall', 'HeadInfo', 'ModelTrace', 'is_preset', 'trace_segmentor',
    'backbone_stage_points', 'classifier_input_points', 'mask_classification_points',
    'resolve_points'
]

#: Preset name -> the kinds of points it selects.
PRESETS: Dict[str, Tuple[str, ...]] = {
    'backbone-stages': ('backbone-stages', ),
    'classifier-input': ('classifier-input', ),
    'mask-classification': ('mask-classification', ),
    'recommended': ('backbone-stages', 'classifier-input', 'mask-classification'),
    'auto': ('backbone-stages', 'classifier-input', 'mask-classification'),
}

#: The attribute names under which a segmentor holds its image backbone, in order
#: (``MultimodalEncoderDecoder`` calls it ``image_encoder``).
BACKBONE_ATTRS: Tuple[str, ...] = ('backbone', 'image_encoder')


@dataclass(frozen=True)
class MaskHeadPoint:
    """A point inside a mask-classification head, relative to the head module.

    Attributes:
        path: submodule path relative to the head.
        where: ``'input'`` or ``'output'``.
        index: element of a tuple output, or None.
        channel_dim: the channel axis (-1 for ``(N, queries, C)`` query features).
        why: why the output depends on it (shown in ``docs/architectures.md``).
    """

    path: str
    where: str
    index: Optional[int]
    channel_dim: int
    why: str


_PIXEL_DECODER = MaskHeadPoint(
    'pixel_decoder', 'output', 0, 1,
    "the pixel decoder's per-pixel mask features: every query's mask is the dot product of "
    'its mask embedding with them')
_QUERY_FEATURES = MaskHeadPoint(
    'cls_embed', 'input', None, -1,
    "the transformer decoder's query features as the class predictor reads them (every "
    'decoder layer): they decide which class each mask gets')
_MASK_EMBED = MaskHeadPoint(
    'mask_embed', 'output', None, -1,
    "the queries' mask embeddings (every decoder layer): their channels must match the pixel "
    'features they are multiplied with')

#: Head class name -> the points ``'mask-classification'`` places in it. These heads
#: predict a set of masks and one class per mask instead of a per-pixel classifier,
#: so the classifier input alone (or the backbone alone) leaves most of the output
#: path unkeyed; the points sit where the per-pixel features and the per-query
#: features meet.
MASK_HEAD_POINTS: Dict[str, Tuple[MaskHeadPoint, ...]] = {
    'Mask2FormerHead': (_PIXEL_DECODER, _QUERY_FEATURES, _MASK_EMBED),
    'MaskFormerHead': (_PIXEL_DECODER, _QUERY_FEATURES, _MASK_EMBED),
    'KernelUpdateHead': (MaskHeadPoint(
        'fc_mask', 'output', None, -1,
        "K-Net's updated kernels (one per class, each stage): each is convolved with the "
        'pixel features to give that class\'s mask'), ),
    'SegmenterMaskTransformerHead': (
        MaskHeadPoint('patch_proj', 'output', None, -1,
                      "Segmenter's patch embeddings: each pixel's class score is their dot "
                      'product with the class embeddings'),
        MaskHeadPoint('classes_proj', 'output', None, -1,
                      "Segmenter's class embeddings, the other side of that dot product")),
    'SideAdapterCLIPHead': (
        MaskHeadPoint('side_adapter_network.mask_decoder.query_mlp', 'output', None, -1,
                      "the side adapter's query embeddings: they give the mask proposals "
                      'and the attention biases of the CLIP recognition layers'),
        MaskHeadPoint('rec_with_attnbias.proj', 'input', None, -1,
                      "the mask tokens of the CLIP recognition layers, before the projection "
                      'that is compared with the text embeddings of the class names')),
}

#: Input sizes tried, in order, when tracing (then the data preprocessor's ``size``).
TRACE_SIZES: Tuple[Tuple[int, int], ...] = ((64, 64), )

#: Tokens (class / distillation) a token sequence may have before the patch tokens.
_MAX_EXTRA_TOKENS = 2

_CLASSIFIER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


@dataclass
class ModuleCall:
    """One call of a submodule seen while tracing.

    Attributes:
        path: the module's path relative to the traced root.
        module: the module.
        input: its first positional argument (None if there was none).
        output: what it returned.
    """

    path: str
    module: nn.Module
    input: Any
    output: Any


@dataclass
class HeadInfo:
    """A decode or auxiliary head of the traced model.

    Attributes:
        path: its module path (``'decode_head'``, ``'decode_head.1'``, ``'auxiliary_head.0'``).
        out_channels: the number of channels its classifier produces.
        in_index: which backbone/neck outputs it reads (None: all).
        error: why its forward could not be traced, or None.
        type_name: its class name.
    """

    path: str
    out_channels: Optional[int]
    in_index: Optional[Tuple[int, ...]]
    error: Optional[str] = None
    type_name: Optional[str] = None


@dataclass
class ModelTrace:
    """What one traced forward pass of a segmentor did.

    Attributes:
        calls: every submodule call in the order the calls returned.
        backbone_outputs: the backbone's output tensors (a single tensor output
            is a one-element list).
        backbone_returns_sequence: whether the backbone returned a tuple/list.
        with_neck: whether the backbone outputs go through a neck.
        heads: the decode and auxiliary heads.
        input_size: ``(H, W)`` of the traced input.
        backbone_path: the backbone's attribute (:data:`BACKBONE_ATTRS`).
        mask_heads: ``(path, class name)`` of every module of the model whose
            class is in :data:`MASK_HEAD_POINTS`.
        decode_calls: the submodule calls of one whole decode pass
            (``encode_decode``), recorded when the model has a mask head
            (whose forward needs more than features).
        decode_error: why that pass failed, or None.
    """

    calls: List[ModuleCall] = field(default_factory=list)
    backbone_outputs: List[Any] = field(default_factory=list)
    backbone_returns_sequence: bool = True
    with_neck: bool = False
    heads: List[HeadInfo] = field(default_factory=list)
    input_size: Optional[Tuple[int, int]] = None
    backbone_path: str = 'backbone'
    mask_heads: List[Tuple[str, str]] = field(default_factory=list)
    decode_calls: List[ModuleCall] = field(default_factory=list)
    decode_error: Optional[str] = None

    def call_counts(self) -> Dict[str, int]:
        """How many times each module path was called."""
        counts: Dict[str, int] = {}
        for call in self.calls:
            counts[call.path] = counts.get(call.path, 0) + 1
        return counts


def is_preset(value: Any) -> bool:
    """Whether ``value`` is the name of a preset (``'auto'``, ``'recommended'`` ...)."""
    return isinstance(value, str) and value in PRESETS


def _depth(path: str) -> int:
    return path.count('.')


def _elements(value: Any) -> List[Tuple[Optional[int], Any]]:
    """``(index, tensor)`` for a tensor (index None) or the tensors of a tuple/list."""
    if isinstance(value, Tensor):
        return [(None, value)]
    if isinstance(value, (tuple, list)):
        return [(i, v) for i, v in enumerate(value) if isinstance(v, Tensor)]
    return []


def _channels_last_equal(candidate: Tensor, target: Tensor) -> bool:
    """Whether ``candidate`` holds ``target`` (N, C, H, W) as (N, H*W, C) or (N, H, W, C)."""
    if target.dim() != 4 or candidate.dtype != target.dtype:
        return False
    n, c, h, w = target.shape
    if candidate.shape == (n, h * w, c):
        return torch.equal(candidate.transpose(1, 2).reshape(n, c, h, w), target)
    if candidate.dim() == 3 and candidate.shape[0] == n and candidate.shape[2] == c \
            and 0 < candidate.shape[1] - h * w <= _MAX_EXTRA_TOKENS:  # a class token first
        tokens = candidate[:, candidate.shape[1] - h * w:]
        return torch.equal(tokens.transpose(1, 2).reshape(n, c, h, w), target)
    if candidate.shape == (n, h, w, c):
        return torch.equal(candidate.permute(0, 3, 1, 2), target)
    return False


def _used_backbone_outputs(trace: ModelTrace) -> List[int]:
    """Indices of the backbone outputs that feed the neck or a head."""
    count = len(trace.backbone_outputs)
    if trace.backbone_path != 'backbone':  # a multimodal head reads every image feature
        return list(range(count))
    if trace.with_neck or any(head.in_index is None for head in trace.heads) or not trace.heads:
        return list(range(count))
    used = {i % count for head in trace.heads for i in head.in_index if -count <= i < count}
    return sorted(used)


def backbone_stage_points(trace: ModelTrace, prefix: Optional[str] = None) -> List[PointSpec]:
    """Points at the backbone outputs that feed the neck or the heads.

    Args:
        trace: a traced forward pass (:func:`trace_segmentor`).
        prefix: the backbone's module path (default: the traced one).

    Returns:
        list[PointSpec]: one point per used backbone output, with ``channels``
        and ``channel_dim`` set (see the module docstring for where each goes).
        An output ``[feature map, class token]`` (a ViT with ``output_cls_token``)
        is placed by its feature map, at the module whose tokens hold both.
    """
    prefix = trace.backbone_path if prefix is None else prefix
    counts = trace.call_counts()
    inside = [c for c in trace.calls if c.path.startswith(prefix + '.') and counts[c.path] == 1]
    points: List[PointSpec] = []
    for i in _used_backbone_outputs(trace):
        target = trace.backbone_outputs[i]
        nested = isinstance(target, (tuple, list)) and bool(target) \
            and isinstance(target[0], Tensor)
        if nested:
            target = target[0]
        if not isinstance(target, Tensor) or target.dim() < 2:
            continue
        point = _same_tensor(inside, target) or _same_values_channels_last(inside, target)
        if point is None and nested:
            continue  # one element of a nested output cannot be addressed
        if point is None:
            index = i if trace.backbone_returns_sequence else None
            point = PointSpec(prefix, 'output', index, int(target.shape[1]),
                              1 if target.dim() == 4 else -1)
        if point not in points:
            points.append(point)
    return points


def _same_tensor(calls: Sequence[ModuleCall], target: Tensor) -> Optional[PointSpec]:
    found = [(call, index) for call in calls for index, value in _elements(call.output)
             if value is target]
    if not found:
        return None
    call, index = min(found, key=lambda item: _depth(item[0].path))  # first of the shallowest
    channel_dim = 1 if target.dim() == 4 else -1
    return PointSpec(call.path, 'output', index, int(target.shape[channel_dim]), channel_dim)


def _same_values_channels_last(calls: Sequence[ModuleCall],
                               target: Tensor) -> Optional[PointSpec]:
    found = [(call, index, value) for call in calls for index, value in _elements(call.output)
             if _channels_last_equal(value, target)]
    if not found:
        return None
    call, index, value = min(found, key=lambda item: _depth(item[0].path))
    return PointSpec(call.path, 'output', index, int(value.shape[-1]), -1)


def classifier_input_points(trace: ModelTrace) -> List[PointSpec]:
    """Points at the input of the classifier of every traced head.

    The classifier is the head's ``conv_seg`` if the forward pass called it,
    else the last convolution or linear layer inside the head, called once,
    whose output channel count is the head's ``out_channels``. Heads whose
    forward could not be traced, or without such a layer, get no point.

    Args:
        trace: a traced forward pass (:func:`trace_segmentor`).

    Returns:
        list[PointSpec]: ``'HEAD.conv_seg:input'``-like points with
        ``channels`` and ``channel_dim`` (-1 for ``nn.Linear``) set.
    """
    counts = trace.call_counts()
    points = []
    for head in trace.heads:
        if head.error is not None or head.type_name in MASK_HEAD_POINTS:
            continue  # mask-classification heads: see mask_classification_points
        calls = [c for c in trace.calls if c.path.startswith(head.path + '.')
                 and counts[c.path] == 1 and isinstance(c.module, _CLASSIFIER_TYPES)
                 and isinstance(c.input, Tensor)]
        named = [c for c in calls if c.path == f'{head.path}.conv_seg']
        mapping = [c for c in calls if _out_channels(c.module) == head.out_channels]
        chosen = named[-1] if named else (mapping[-1] if mapping else None)
        if chosen is None:
            continue
        channel_dim = -1 if isinstance(chosen.module, nn.Linear) else 1
        points.append(PointSpec(chosen.path, 'input', None,
                                int(chosen.input.shape[channel_dim]), channel_dim))
    return points


def mask_classification_points(trace: ModelTrace) -> List[PointSpec]:
    """Points inside the mask-classification heads of a traced model (:data:`MASK_HEAD_POINTS`).

    A head is found by its class name anywhere in the model (K-Net's kernel
    update heads sit inside its ``decode_head``); each of its points is kept if
    the decode pass (:attr:`ModelTrace.decode_calls`) called the module with a
    tensor there, whose size on ``channel_dim`` gives ``channels``.

    Args:
        trace: a traced forward pass (:func:`trace_segmentor`).

    Returns:
        list[PointSpec]: the points, in module order.
    """
    first: Dict[str, ModuleCall] = {}
    for call in trace.decode_calls:
        first.setdefault(call.path, call)
    points = []
    for head, type_name in trace.mask_heads:
        for entry in MASK_HEAD_POINTS[type_name]:
            call = first.get(f'{head}.{entry.path}')
            value = None if call is None else \
                (call.input if entry.where == 'input' else call.output)
            if entry.index is not None:
                value = value[entry.index] if isinstance(value, (tuple, list)) \
                    and len(value) > entry.index else None
            if isinstance(value, Tensor) and value.dim() >= 2:
                points.append(PointSpec(call.path, entry.where, entry.index,
                                        int(value.shape[entry.channel_dim]), entry.channel_dim))
    return points


def _out_channels(module: nn.Module) -> Optional[int]:
    return getattr(module, 'out_features', getattr(module, 'out_channels', None))


def _head_infos(model: nn.Module) -> List[Tuple[HeadInfo, nn.Module]]:
    infos = []
    for name in ('decode_head', 'auxiliary_head'):
        module = getattr(model, name, None)
        if module is None:
            continue
        heads = list(enumerate(module)) if isinstance(module, nn.ModuleList) else [(None, module)]
        for i, head in heads:
            in_index = getattr(head, 'in_index', None)
            if isinstance(in_index, int):
                in_index = (in_index, )
            elif in_index is not None:
                in_index = tuple(in_index)
            path = name if i is None else f'{name}.{i}'
            infos.append((HeadInfo(path, getattr(head, 'out_channels', None), in_index,
                                   type_name=type(head).__name__), head))
    return infos


def _input_channels(model: nn.Module) -> int:
    """The image channels: from the data preprocessor's ``mean``, else 3."""
    mean = getattr(getattr(model, 'data_preprocessor', None), 'mean', None)
    return int(mean.numel()) if isinstance(mean, Tensor) and mean.numel() > 0 else 3


def _trace_sizes(model: nn.Module) -> List[Tuple[int, int]]:
    sizes = list(TRACE_SIZES)
    size = getattr(getattr(model, 'data_preprocessor', None), 'size', None)
    if isinstance(size, (tuple, list)) and len(size) == 2 and tuple(size) not in sizes:
        sizes.append((int(size[0]), int(size[1])))
    return sizes


def trace_segmentor(model: nn.Module,
                    input_size: Optional[Tuple[int, int]] = None,
                    training: bool = False) -> ModelTrace:
    """Run a segmentor's backbone, neck and heads once and record every submodule call.

    The model is put in eval (or train) mode for the trace and restored
    afterwards, without gradients; the input comes from a local generator and
    the global RNG state and every buffer (batch-norm statistics) are restored,
    so the model and the RNG are as before.

    Args:
        model: an mmseg segmentor (``backbone``, optional ``neck``,
            ``decode_head`` and ``auxiliary_head``, which may be ``ModuleList``s).
        input_size: ``(H, W)`` of the random input; None tries 64x64, then
            (if the backbone or a head fails there) the data preprocessor's
            ``size``, and keeps the trace in which the fewest heads failed.
        training: trace in train mode (batch of 2) instead of eval mode (batch of 1).

    Returns:
        ModelTrace: the calls, the backbone outputs and the heads.

    Raises:
        ValueError: if the model has no backbone, or the backbone (or neck)
            fails at every size tried (the message has the last error).
    """
    if _backbone_path(model) is None:
        raise ValueError(f'cannot find points in {type(model).__name__}: it has no backbone '
                         f'module (looked for {list(BACKBONE_ATTRS)}); give the points as '
                         'module paths')
    sizes = [tuple(input_size)] if input_size is not None else _trace_sizes(model)
    errors, traces = [], []
    for size in sizes:
        try:
            traces.append(_trace_at(model, size, training))
        except Exception as error:  # a backbone that needs another input size
            errors.append(f'{size[0]}x{size[1]}: {type(error).__name__}: {error}')
            continue
        if not any(head.error for head in traces[-1].heads):
            break  # else a head may need a larger input (e.g. a large pooling window)
    if traces:
        return min(traces, key=lambda t: sum(head.error is not None for head in t.heads))
    raise ValueError(f'cannot trace {type(model).__name__} to find points (tried '
                     f'{"; ".join(errors)}); give the points as module paths')


def _backbone_path(model: nn.Module) -> Optional[str]:
    return next((name for name in BACKBONE_ATTRS
                 if isinstance(getattr(model, name, None), nn.Module)), None)


def _trace_at(model: nn.Module, size: Tuple[int, int], training: bool) -> ModelTrace:
    trace = ModelTrace(input_size=size, backbone_path=_backbone_path(model),
                       mask_heads=[(name, type(module).__name__)
                                   for name, module in model.named_modules()
                                   if type(module).__name__ in MASK_HEAD_POINTS])
    recording = [trace.calls]

    def record(path: str, module: nn.Module, args: Tuple[Any, ...], output: Any) -> None:
        recording[0].append(ModuleCall(path, module, args[0] if args else None, output))

    handles = [module.register_forward_hook(partial(record, name))
               for name, module in model.named_modules() if name]
    was_training = model.training
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else torch.device('cpu')
    generator = torch.Generator().manual_seed(0)
    inputs = torch.randn(2 if training else 1, _input_channels(model), *size,
                         generator=generator).to(device)
    buffers = {name: buffer.clone() for name, buffer in model.named_buffers()}
    caches = _feature_caches(model)
    try:
        model.train(training)
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            outputs = getattr(model, trace.backbone_path)(inputs)
            trace.backbone_returns_sequence = isinstance(outputs, (tuple, list))
            trace.backbone_outputs = list(outputs) if trace.backbone_returns_sequence \
                else [outputs]
            neck = getattr(model, 'neck', None)
            trace.with_neck = isinstance(neck, nn.Module)
            features = neck(outputs) if trace.with_neck else outputs
            _trace_heads(model, features, trace)
            if trace.mask_heads:
                recording[0] = trace.decode_calls
                _trace_decode(model, inputs, trace)
    finally:
        for handle in handles:
            handle.remove()
        for cache, saved in caches:
            cache.clear()
            cache.update(saved)
        model.train(was_training)
        with torch.no_grad():
            for name, buffer in model.named_buffers():
                if name in buffers:
                    buffer.copy_(buffers[name])
    return trace


def _feature_caches(model: nn.Module) -> List[Tuple[Dict[Any, Any], Dict[Any, Any]]]:
    """``(cache, copy)`` of the dict caches modules fill on a forward pass.

    mmseg's ``CLIPTextEncoder`` (``cache_feature=True``) keeps the class
    embeddings of its first call; a trace before the weights are loaded must
    not leave them behind.
    """
    return [(module.cache, dict(module.cache)) for module in model.modules()
            if isinstance(getattr(module, 'cache', None), dict)]


def _trace_decode(model: nn.Module, inputs: Tensor, trace: ModelTrace) -> None:
    """One ``encode_decode`` pass (the path ``predict`` takes), recording its calls."""
    size = tuple(inputs.shape[-2:])
    metas = [dict(img_shape=size, ori_shape=size, pad_shape=size, batch_input_shape=size)
             for _ in range(len(inputs))]
    try:
        model.encode_decode(inputs, metas)
    except Exception as error:  # the mask points of this mode are then unknown
        trace.decode_error = f'{type(error).__name__}: {error}'


def _trace_heads(model: nn.Module, features: Any, trace: ModelTrace) -> None:
    previous = None
    for info, head in _head_infos(model):
        cascade_stage = info.path.startswith('decode_head.') and not info.path.endswith('.0')
        try:
            out = head(features, previous) if cascade_stage else head(features)
        except Exception as error:  # heads that need more than features (mask heads, ...)
            info.error = f'{type(error).__name__}: {error}'
            out = None
        if info.path.startswith('decode_head'):
            previous = out
        trace.heads.append(info)


def resolve_points(model: nn.Module,
                   points: Union[PointLike, Sequence[PointLike]],
                   input_size: Optional[Tuple[int, int]] = None) -> Union[PointLike,
                                                                           List[PointLike]]:
    """Replace preset names in ``points`` by the points they select in ``model``.

    Explicit points (paths, dicts, :class:`PointSpec`) are returned unchanged
    and in place; without a preset name ``points`` itself is returned and the
    model is not traced. The chosen points are logged.

    Args:
        model: the built segmentor, before any permutation is attached.
        points: a preset name (``'auto'``, ``'recommended'``,
            ``'backbone-stages'``, ``'classifier-input'``), an explicit point,
            or a list of both.
        input_size: ``(H, W)`` of the trace input (see :func:`trace_segmentor`).

    Returns:
        ``points`` unchanged, or a list of points with each preset expanded.

    Raises:
        ValueError: for a string that is neither a preset nor a point path
            (naming it and the presets), or a preset that selects no point in
            ``model`` (naming the preset and why).

    Example:
        >>> resolve_points(segmentor, 'auto')  # doctest: +SKIP
        [PointSpec(path='backbone.layer3', ...), PointSpec(path='backbone.layer4', ...),
         PointSpec(path='decode_head.conv_seg', where='input', ...), ...]
    """
    items = [points] if isinstance(points, (str, Mapping, PointSpec)) else list(points)
    for item in items:
        _check_not_misspelt_preset(item, model)
    if not any(is_preset(item) for item in items):
        return points
    trace = trace_segmentor(model, input_size)
    train_trace = _train_trace(model, trace, input_size)
    resolved: List[PointLike] = []
    for item in items:
        if not is_preset(item):
            resolved.append(item)
            continue
        chosen = _select(trace, item)
        if train_trace is not None:
            in_training = _select(train_trace, item)
            dropped = [p.name() for p in chosen if p not in in_training]
            if dropped:
                print_log(f'{type(model).__name__}: points={item!r}: {dropped} exist only in '
                          'eval mode (the module returns something else when training); '
                          'left out', logger='current')
            chosen = [p for p in chosen if p in in_training]
        if not chosen:
            failed = [f'{h.path} ({h.error})' for h in trace.heads if h.error]
            raise ValueError(f'points={item!r} selects no point in {type(model).__name__}'
                             + (f'; heads that could not be traced: {failed}' if failed else '')
                             + '; give the points as module paths')
        resolved += [p for p in chosen if p not in resolved]
    names = ', '.join(PointSpec.parse(p).name() for p in resolved)
    print_log(f'{type(model).__name__}: points={points!r} resolved to [{names}]',
              logger='current')
    return resolved


def _train_trace(model: nn.Module, trace: ModelTrace,
                 input_size: Optional[Tuple[int, int]]) -> Optional[ModelTrace]:
    """A train-mode trace at the size the eval trace used; None if training cannot be traced.

    Some models return other things when training (e.g. extra outputs for
    auxiliary losses); a point must exist in both modes.
    """
    size = input_size or trace.input_size
    try:
        return trace_segmentor(model, size, training=True)
    except ValueError as error:  # e.g. SyncBN on CPU inside a process group
        print_log(f'{type(model).__name__}: cannot trace in train mode, so the points are '
                  f'those of eval mode ({error})', logger='current', level=logging.WARNING)
        return None


def _select(trace: ModelTrace, preset: str) -> List[PointSpec]:
    chosen: List[PointSpec] = []
    for kind in PRESETS[preset]:
        found = _SELECTORS[kind](trace)
        chosen += [p for p in found if p not in chosen]
    return chosen


_SELECTORS = {
    'backbone-stages': backbone_stage_points,
    'classifier-input': classifier_input_points,
    'mask-classification': mask_classification_points,
}


def _check_not_misspelt_preset(item: Any, model: nn.Module) -> None:
    """A string that is no preset, no valid path and no module, but close to a preset."""
    if not isinstance(item, str) or is_preset(item):
        return
    looks_like_path = all(ch.isalnum() or ch in '_.:[]' for ch in item)
    if looks_like_path and (item.partition(':')[0].partition('[')[0]
                            in dict(model.named_modules()) or '.' in item or ':' in item):
        return
    close = difflib.get_close_matches(item, list(PRESETS), n=1, cutoff=0.6)
    if not looks_like_path or close:
        hint = f' (did you mean {close[0]!r}?)' if close else ''
        raise ValueError(f'unknown points preset {item!r}{hint}; presets are '
                         f'{sorted(PRESETS)}, or give module paths such as '
                         "'decode_head.conv_seg:input'")
