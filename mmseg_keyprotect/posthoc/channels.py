"""Follow keyed channel permutations through a recorded forward pass and absorb them.

Given the operations of one forward pass of a model *with* permutations at
its points (:mod:`.trace`), find new weights under which the permuted model
computes exactly what the original, unpermuted model computes.

Every tensor ``t`` of the pass gets an index ``q`` (None: identity) such that,
with the new weights and the permutations in place, the model computes
``t[:, q]`` (along ``t``'s channel axis) where the original computed ``t``:

* a point's permutation ``alpha`` turns ``q`` into ``q[alpha]``;
* channel-wise operations (batch/layer norm, activations, pooling, resizing,
  dropout, depthwise convolutions, reshapes that keep the channel axis) keep
  ``q``; their per-channel parameters are permuted by it;
* a convolution or linear layer *absorbs* ``q``: its input-channel axis is
  permuted by ``q`` (``W' = W[:, q]``) and its output is unpermuted, unless its
  output has to carry an index (below), then ``W' = W[q_out][:, q]``;
* an addition or multiplication (residual connections, gating) needs both
  operands to carry the same index: the operand that carries none is
  re-indexed back to the layer that produced it (``W' = W[q]`` on its output
  axis, and every channel-wise layer in between), which is possible when that
  chain of tensors is used by nothing else; a parameter operand (position
  embeddings, class tokens, layer scales) is permuted itself;
* concatenation along channels gives the concatenated index.

Anything else a permuted tensor reaches (attention products, channel
slicing, grouped convolutions, the model's output ...) cannot keep the model
exact; :class:`PointRefused` names the point whose permutation got there and
the operation.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, FrozenSet, List, Mapping, Optional, Sequence, Set, Tuple

import torch
from torch import Tensor

from .trace import OpRecord, flat_tensor_args, tensors_in

__all__ = ['PointRefused', 'Hook', 'absorb_records', 'points_reached']

#: A point's permutation in a recorded pass: ``(point name, target index, original index)``.
#: The pass ran ``original`` (None: nothing) at the point; the transformed model runs
#: ``target`` there and must compute what the pass computed.
Hook = Tuple[str, Tensor, Optional[Tensor]]

_CHANNELWISE = frozenset({
    'relu', 'relu_', 'relu6', 'gelu', 'gelu_', 'silu', 'silu_', 'sigmoid', 'sigmoid_', 'tanh',
    'tanh_', 'hardswish', 'hardswish_', 'hardsigmoid', 'hardsigmoid_', 'leaky_relu',
    'leaky_relu_', 'elu', 'elu_', 'hardtanh', 'hardtanh_', 'mish', 'softplus', 'erf', 'exp',
    'sqrt', 'abs', 'neg', '__neg__', 'clamp', 'clamp_', 'clip', 'dropout', 'dropout1d',
    'dropout2d', 'dropout3d', 'alpha_dropout', 'feature_alpha_dropout', 'clone', 'contiguous',
    'float', 'double', 'half', 'to', 'type', 'type_as', 'detach', 'max_pool1d', 'max_pool2d',
    'max_pool3d', 'avg_pool1d', 'avg_pool2d', 'avg_pool3d', 'adaptive_avg_pool1d',
    'adaptive_avg_pool2d', 'adaptive_avg_pool3d', 'adaptive_max_pool1d', 'adaptive_max_pool2d',
    'interpolate', 'upsample', 'upsample_bilinear', 'upsample_nearest', 'pixel_shuffle_free',
})
_BINARY = frozenset({
    'add', 'add_', '__add__', '__radd__', '__iadd__', 'sub', 'sub_', '__sub__', '__rsub__',
    '__isub__', 'mul', 'mul_', '__mul__', '__rmul__', '__imul__', 'div', 'div_', 'true_divide',
    '__truediv__', '__rtruediv__', '__itruediv__',
})
# Operations that only move values: the channel axis is found by running them on a probe.
_SHAPE = frozenset({
    'view', 'reshape', 'flatten', 'unflatten', 'transpose', 'transpose_', 'permute',
    'unsqueeze', 'squeeze', '__getitem__', 'expand', 'expand_as', 'movedim', 'moveaxis',
    'swapaxes', 'roll', 'repeat', 'narrow', 'view_as', 'reshape_as', 't', 'chunk', 'split',
    'unbind', 'tensor_split',
})
_CONV = frozenset({'conv1d', 'conv2d', 'conv3d'})
_NORM = frozenset({'batch_norm', 'instance_norm', 'layer_norm', 'group_norm'})


class PointRefused(ValueError):
    """A point whose permutation cannot be absorbed exactly.

    Attributes:
        point: the point's name (``'backbone.layer1:input'``).
        reason: why, in a few words.
    """

    def __init__(self, point: str, reason: str) -> None:
        super().__init__(f'point {point!r}: {reason}')
        self.point = point
        self.reason = reason


@dataclass(eq=False)
class _Node:
    """A value of the pass: its channel axis, its index and how it could be re-indexed."""

    tensor: Tensor
    axis: Optional[int]
    q: Optional[Tensor] = None
    points: FrozenSet[str] = frozenset()
    chain: Optional[List['_Node']] = None  # from a free producer to here, all channel-wise
    uses: int = 0
    param: Optional[str] = None

    @property
    def channels(self) -> int:
        return int(self.tensor.shape[self.axis])


@dataclass
class _Use:
    """An operation whose weights depend on the indices of its input/output values."""

    kind: str
    record: OpRecord
    inputs: List[_Node]
    output: _Node


def _arg(record: OpRecord, index: int, name: str, default: Any = None) -> Any:
    if len(record.args) > index:
        return record.args[index]
    return record.kwargs.get(name, default)


def _compose(q: Optional[Tensor], alpha: Tensor) -> Tensor:
    return alpha if q is None else q[alpha]


def _same(a: Optional[Tensor], b: Optional[Tensor]) -> bool:
    if a is None or b is None:
        return a is None and b is None
    return torch.equal(a, b)


@dataclass
class _Solver:
    params: Mapping[int, str]
    hooks: Mapping[int, 'Hook']
    nodes: Dict[int, _Node] = field(default_factory=dict)
    uses: List[_Use] = field(default_factory=list)
    param_nodes: List[_Node] = field(default_factory=list)

    # -------------------------------------------------------------- nodes
    def node(self, tensor: Tensor) -> _Node:
        found = self.nodes.get(id(tensor))
        if found is not None:
            return found
        name = self.params.get(id(tensor))
        if name is not None:
            node = _Node(tensor, _param_axis(tensor), param=name)
            node.chain = [node]
            self.param_nodes.append(node)
        else:
            node = _Node(tensor, 1 if tensor.dim() >= 2 else None)
        self.nodes[id(tensor)] = node
        return node

    def new(self, tensor: Tensor, axis: Optional[int], q: Optional[Tensor] = None,
            points: FrozenSet[str] = frozenset(),
            chain: Optional[List[_Node]] = None) -> _Node:
        node = _Node(tensor, None if axis is None else axis % max(tensor.dim(), 1), q, points)
        node.chain = chain
        self.nodes[id(tensor)] = node
        return node

    @staticmethod
    def extend(source: _Node, out: _Node) -> None:
        """``out`` is a channel-wise function of ``source``: same index, longer chain."""
        out.q, out.points = source.q, source.points
        out.chain = source.chain + [out] if source.chain is not None and source.q is None \
            else None

    @staticmethod
    def refuse(nodes: Sequence[_Node], reason: str) -> PointRefused:
        points = sorted({p for n in nodes for p in n.points}) or ['?']
        return PointRefused(points[0], reason)

    # -------------------------------------------------------------- ops
    def run(self, records: Sequence[OpRecord]) -> None:
        for record in records:
            inputs = [self.node(t) for t in flat_tensor_args(record)]
            self.step(record, inputs)
            for node in inputs:
                node.uses += 1

    def step(self, record: OpRecord, inputs: List[_Node]) -> None:
        name = record.name
        first = inputs[0] if inputs else None
        if name == 'index_select' and len(record.args) >= 3 and id(record.args[2]) in self.hooks:
            return self.hook(record, first)
        if name in _CONV:
            return self.conv(record, inputs)
        if name == 'linear':
            return self.linear(record, inputs)
        if name in _NORM:
            return self.norm(record, inputs)
        if name == 'multi_head_attention_forward':
            return self.attention(record, inputs)
        if name in _BINARY and len(tensors_in(record.args[:2])) == 2:
            return self.couple(record, [self.node(t) for t in record.args[:2]],
                               _output(record))
        if name in _CHANNELWISE or name in _BINARY:
            out = self.new(_output(record), first.axis)
            return self.extend(first, out)
        if name == 'pad':
            return self.pad(record, first)
        if name in ('cat', 'concat', 'concatenate'):
            return self.cat(record)
        if name == 'unfold' and first.tensor.dim() == 4:
            return self.unfold(record, first)
        if name in _SHAPE:
            return self.shape(record, first)
        permuted = [n for n in inputs if n.q is not None]
        if permuted:
            raise self.refuse(permuted, f'its permutation reaches {name!r}, which mixes or '
                              'selects channels (cannot be kept exact)')
        for tensor in tensors_in(record.output):
            self.new(tensor, None)

    def hook(self, record: OpRecord, source: _Node) -> None:
        point, target, original = self.hooks[id(record.args[2])]
        axis = record.args[1] % source.tensor.dim()
        if source.q is not None and source.axis != axis:
            raise PointRefused(point, 'another permutation reaches it on another axis')
        q = _compose(source.q, target)
        if original is not None:  # the pass ran ``original`` here: q relative to its output
            q = torch.argsort(original)[q]
        self.new(record.output, axis, q, source.points | {point})

    def conv(self, record: OpRecord, inputs: List[_Node]) -> None:
        x, weight = record.args[0], _arg(record, 1, 'weight')
        groups = _arg(record, 6, 'groups', 1)
        source = self.node(x)
        out = _output(record)
        if source.q is not None and source.axis != 1:
            raise self.refuse([source], f'{record.name} reads its permutation on axis '
                              f'{source.axis}, not on its channel axis')
        if groups == 1:
            node = self.new(out, 1)
            node.chain = [node]
            self.uses.append(_Use('conv', record, [source], node))
        elif weight.shape[1] == 1 and groups == weight.shape[0] == x.shape[1]:
            node = self.new(out, 1)
            self.extend(source, node)
            self.uses.append(_Use('depthwise', record, [source], node))
        else:
            if source.q is not None:
                raise self.refuse([source], f'its permutation reaches a {record.name} with '
                                  f'groups={groups}, which mixes channels within groups')
            self.new(out, 1)

    def linear(self, record: OpRecord, inputs: List[_Node]) -> None:
        source = self.node(record.args[0])
        out = _output(record)
        if source.q is not None and source.axis != source.tensor.dim() - 1:
            raise self.refuse([source], 'a linear layer reads its permutation on axis '
                              f'{source.axis}, not on its feature axis')
        node = self.new(out, out.dim() - 1)
        node.chain = [node]
        self.uses.append(_Use('linear', record, [source], node))

    def norm(self, record: OpRecord, inputs: List[_Node]) -> None:
        source = self.node(record.args[0])
        out = _output(record)
        axis = 1
        if record.name == 'layer_norm':
            shape = tuple(_arg(record, 1, 'normalized_shape'))
            axis = out.dim() - 1
            if source.q is not None and (len(shape) != 1 or source.axis != axis):
                raise self.refuse([source], f'a layer_norm over {shape} normalises more than '
                                  'the permuted axis')
        elif record.name == 'group_norm':
            groups = _arg(record, 1, 'num_groups')
            if source.q is not None and groups not in (1, source.tensor.shape[1]):
                raise self.refuse([source], f'a group_norm with {groups} groups of '
                                  f'{source.tensor.shape[1]} channels mixes statistics across '
                                  'the permutation')
        if source.q is not None and source.axis != axis:
            raise self.refuse([source], f'{record.name} normalises axis {axis}, but the '
                              f'permutation is on axis {source.axis}')
        node = self.new(out, axis)
        self.extend(source, node)
        self.uses.append(_Use(record.name, record, [source], node))

    def attention(self, record: OpRecord, inputs: List[_Node]) -> None:
        query, key, value = (self.node(t) for t in record.args[:3])
        if _arg(record, 17, 'use_separate_proj_weight', False):
            permuted = [n for n in (query, key, value) if n.q is not None]
            if permuted:
                raise self.refuse(permuted, 'attention with separate projection weights')
        for node in (query, key, value):
            if node.q is not None and node.axis != node.tensor.dim() - 1:
                raise self.refuse([node], 'attention reads the permutation off its feature axis')
        out = record.output[0]
        node = self.new(out, out.dim() - 1)
        node.chain = [node]
        for extra in tensors_in(record.output)[1:]:
            self.new(extra, None)
        self.uses.append(_Use('attention', record, [query, key, value], node))

    def couple(self, record: OpRecord, operands: List[_Node], out: Tensor) -> None:
        """An element-wise op of two tensors: operands aligned on the channel axis share q."""
        permuted = [n for n in operands if n.q is not None]
        if not permuted:
            self.new(out, _broadcast_axis(operands, out))
            return
        lead = permuted[0]
        out_axis = out.dim() - (lead.tensor.dim() - lead.axis)
        target = lead.q
        points = frozenset().union(*(n.points for n in permuted))
        for node in permuted[1:]:
            if not _same(node.q, target) or out.dim() - (node.tensor.dim() - node.axis) \
                    != out_axis:
                raise self.refuse(permuted, f'{record.name} combines it with another '
                                  'permutation')
        for node in operands:
            axis = node.tensor.dim() - (out.dim() - out_axis)
            if node.q is not None or axis < 0 or node.tensor.shape[axis] == 1:
                continue  # broadcast over the channels: the same for every order
            self.reindex(node, target, axis, points, record.name)
        self.new(out, out_axis, target, points)

    def reindex(self, node: _Node, q: Tensor, axis: int, points: FrozenSet[str],
                where: str) -> None:
        chain = node.chain
        if chain is None or node.axis != axis or any(n.uses != 1 for n in chain[:-1]) \
                or chain[-1].uses != 0:
            raise PointRefused(sorted(points)[0], f'{where} adds it to a tensor that cannot be '
                               'permuted the same way (used elsewhere, or not produced by a '
                               'layer with per-channel outputs)')
        for member in chain:
            member.q, member.points = q, member.points | points
            member.chain = None

    def pad(self, record: OpRecord, source: _Node) -> None:
        pad = list(_arg(record, 1, 'pad'))
        out = self.new(_output(record), source.axis)
        if source.axis is not None:
            pair = 2 * (source.tensor.dim() - 1 - source.axis)
            if any(pad[pair:pair + 2]) and source.q is not None:
                raise self.refuse([source], 'F.pad pads its channel axis')
        self.extend(source, out)

    def cat(self, record: OpRecord) -> None:
        tensors = list(_arg(record, 0, 'tensors'))
        dim = _arg(record, 1, 'dim', 0) % tensors[0].dim()
        nodes = [self.node(t) for t in tensors]
        out = _output(record)
        permuted = [n for n in nodes if n.q is not None]
        if not permuted:
            self.new(out, None if nodes[0].axis == dim else nodes[0].axis)
            return
        if all(n.axis == dim for n in permuted):
            parts, offset = [], 0
            for node in nodes:
                size = node.tensor.shape[dim]
                parts.append((node.q if node.q is not None else torch.arange(size)) + offset)
                offset += size
            self.new(out, dim, torch.cat(parts), frozenset().union(*(n.points for n in permuted)))
            return
        # concatenation along another axis (tokens): the operands share the channel index
        lead = permuted[0]
        for node in nodes:
            if node.q is None:
                self.reindex(node, lead.q, lead.axis, lead.points, 'torch.cat')
            elif not _same(node.q, lead.q) or node.axis != lead.axis:
                raise self.refuse(permuted, 'torch.cat joins two different permutations')
        self.new(out, lead.axis, lead.q, frozenset().union(*(n.points for n in permuted)))

    def unfold(self, record: OpRecord, source: _Node) -> None:
        out = _output(record)
        if source.q is None:
            self.new(out, 1)
            return
        if source.axis != 1:
            raise self.refuse([source], 'F.unfold reads the permutation off its channel axis')
        per_channel = out.shape[1] // source.tensor.shape[1]
        q = (source.q[:, None] * per_channel + torch.arange(per_channel)).flatten()
        self.new(out, 1, q, source.points)

    def shape(self, record: OpRecord, source: _Node) -> None:
        outputs = tensors_in(record.output)
        axes = _probe_axes(record, source) if source.axis is not None else None
        for i, tensor in enumerate(outputs):
            axis = None if axes is None else axes[i]
            if axis is None and source.q is not None:
                raise self.refuse([source], f'{record.name} splits, slices or merges the '
                                  'permuted channel axis')
            node = self.new(tensor, axis)
            if axis is not None:
                self.extend(source, node)
            if len(outputs) > 1 and node.chain is not None:
                node.chain = None  # a chain must be used once only

    # -------------------------------------------------------------- weights
    def new_weights(self) -> Dict[str, Tensor]:
        """The parameters and buffers that change, by name."""
        changes: Dict[str, Tensor] = {}

        def put(tensor: Optional[Tensor], value: Tensor, use: str) -> None:
            if tensor is None:
                return
            name = self.params.get(id(tensor))
            if name is None:
                raise PointRefused('?', f'{use}: a weight that is not a parameter of the model')
            if name in changes and not torch.equal(changes[name], value):
                raise PointRefused('?', f'{name} is shared by layers that need different '
                                   'permutations')
            changes[name] = value

        for use in self.uses:
            record, out = use.record, use.output
            q_in = use.inputs[0].q
            if use.kind in ('conv', 'linear'):
                weight, bias = _arg(record, 1, 'weight'), _arg(record, 2, 'bias')
                if q_in is None and out.q is None:
                    continue
                new = weight if out.q is None else weight[out.q]
                put(weight, new if q_in is None else new[:, q_in], record.name)
                if bias is not None and out.q is not None:
                    put(bias, bias[out.q], record.name)
            elif use.kind == 'attention':
                self._attention_weights(use, put)
            elif out.q is not None:  # channel-wise layers: every per-channel tensor
                for tensor in _per_channel(use):
                    if tensor is not None:
                        put(tensor, tensor[out.q], record.name)
        for node in self.param_nodes:
            if node.q is not None:
                put(node.tensor, node.tensor.index_select(node.axis, node.q), node.param)
        return changes

    @staticmethod
    def _attention_weights(use: _Use, put) -> None:
        record = use.record
        query, key, value = use.inputs
        weight, bias = record.args[5], record.args[6]
        out_weight, out_bias = record.args[11], record.args[12]
        embed = weight.shape[0] // 3
        if any(n.q is not None for n in use.inputs):
            blocks = [weight[i * embed:(i + 1) * embed] for i in range(3)]
            blocks = [b if n.q is None else b[:, n.q] for b, n in zip(blocks, use.inputs)]
            put(weight, torch.cat(blocks), record.name)
        if use.output.q is not None:
            put(out_weight, out_weight[use.output.q], record.name)
            if out_bias is not None:
                put(out_bias, out_bias[use.output.q], record.name)


def _per_channel(use: _Use) -> List[Optional[Tensor]]:
    record = use.record
    if use.kind == 'batch_norm':
        return [_arg(record, i, n) for i, n in
                ((1, 'running_mean'), (2, 'running_var'), (3, 'weight'), (4, 'bias'))]
    if use.kind == 'instance_norm':
        return [_arg(record, i, n) for i, n in
                ((1, 'running_mean'), (2, 'running_var'), (3, 'weight'), (4, 'bias'))]
    if use.kind == 'layer_norm':
        return [_arg(record, 2, 'weight'), _arg(record, 3, 'bias')]
    if use.kind == 'group_norm':
        return [_arg(record, 2, 'weight'), _arg(record, 3, 'bias')]
    if use.kind == 'depthwise':
        return [_arg(record, 1, 'weight'), _arg(record, 2, 'bias')]
    return []


def _output(record: OpRecord) -> Tensor:
    return tensors_in(record.output)[0]


def _param_axis(tensor: Tensor) -> Optional[int]:
    """A parameter's channel axis: its last, or its first of size > 1 if the last is 1."""
    if tensor.dim() == 0:
        return None
    if tensor.shape[-1] == 1:
        sized = [i for i, s in enumerate(tensor.shape) if s > 1]
        return sized[0] if sized else tensor.dim() - 1
    return tensor.dim() - 1


def _broadcast_axis(operands: Sequence[_Node], out: Tensor) -> Optional[int]:
    for node in operands:
        if node.axis is not None and node.tensor.dim() == out.dim():
            return node.axis
    return None


def _probe_axes(record: OpRecord, source: _Node) -> Optional[List[Optional[int]]]:
    """Where each output of a data-movement op holds ``source``'s channel axis (None: lost).

    Runs the op on a probe that holds the channel number at every position and
    looks for the output axis along which the probe reads ``0, 1, ..., C - 1``.
    """
    tensor = source.tensor
    channels = tensor.shape[source.axis]
    shape = [1] * tensor.dim()
    shape[source.axis] = channels
    probe = torch.arange(channels, dtype=torch.float64).reshape(shape).expand(tensor.shape)
    probe = probe.contiguous()
    args = list(record.args)
    position = next((i for i, a in enumerate(args) if a is tensor), None)
    if position is None:
        return None
    args[position] = probe
    try:
        with torch.no_grad():
            result = record.func(*args, **record.kwargs)
    except Exception:  # an op that cannot take the probe (a method of another tensor)
        return None
    axes: List[Optional[int]] = []
    for out in tensors_in(result):
        found = None
        for axis in range(out.dim()):
            if out.shape[axis] != channels:
                continue
            ramp = [1] * out.dim()
            ramp[axis] = channels
            expected = torch.arange(channels, dtype=torch.float64).reshape(ramp)
            if torch.equal(out, expected.expand(out.shape)):
                found = axis
                break
        axes.append(found)
    return axes


def absorb_records(records: Sequence[OpRecord], outputs: Sequence[Tensor],
                   params: Mapping[int, str], hooks: Mapping[int, Hook]) -> Dict[str, Tensor]:
    """The new weights under which the points' target permutations compute what the pass did.

    To protect a plain model, the pass runs the target permutations themselves
    (``original`` None: the original model had none); to change the key of a
    protected model, the pass runs the old key's permutations (``original``)
    and the target is the new key's.

    Args:
        records: the operations of one forward pass of the model with its
            point permutations in place (:func:`~.trace.record_ops`).
        outputs: the tensors the pass returned; none may carry a permutation.
        params: ``id(tensor)`` -> name, for every parameter and buffer of the model.
        hooks: ``id(index)`` -> :data:`Hook` for the index tensor of every point
            permutation that ran (the ``index_select`` a point runs).

    Returns:
        dict: name -> new value of every parameter or buffer that changes.

    Raises:
        PointRefused: naming the point whose permutation cannot be absorbed, and why.
    """
    solver = _Solver(params, hooks)
    solver.run(records)
    for tensor in outputs:
        node = solver.nodes.get(id(tensor))
        if node is not None and node.q is not None:
            raise solver.refuse([node], 'its permutation reaches the output of the model '
                                '(no layer after it to absorb it)')
    return solver.new_weights()


def points_reached(records: Sequence[OpRecord], hooks: Mapping[int, Hook]) -> Set[str]:
    """The points whose permutation ran in the recorded pass."""
    return {hooks[id(r.args[2])][0] for r in records
            if r.name == 'index_select' and len(r.args) >= 3 and id(r.args[2]) in hooks}

