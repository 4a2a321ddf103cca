"""Points of a network addressed by module path, and permutations hooked there.

A *point* names a tensor inside any ``nn.Module`` by the path of a submodule
(as in ``named_modules()``) and which side of it is meant:

* ``'backbone.layer1'`` or ``'backbone.layer1:output'``: what ``layer1`` returns;
* ``'backbone.layer1:input'``: the first positional argument ``layer1`` is called with;
* ``'backbone.layers.0.0:output[0]'``: element 0 of a tuple/list output (or input);
* the same as a dict, ``dict(path='backbone.layer1', where='input', index=None,
  channels=None, channel_dim=1)``, which can also give the channel count
  (otherwise inferred on the first forward) and the channel axis (-1 for
  ``(N, L, C)`` token features).

:func:`attach_permutations` puts a :class:`PointPermutation` at each point with
forward hooks (``output``) or forward pre-hooks (``input``). The permutations
become children of the root module, so ``root.modules()`` finds them for key
switching, ``.to()`` moves them, and, holding no parameters or persistent
buffers, they add nothing to the ``state_dict``.

Each point's permutation is derived from the key under the point's name,
``'{prefix}.{path}:{where}[{index}]'``, so several points never share a
permutation, and a point gets the same permutation whichever wrapper (segmentor,
backbone or head) places it, as long as the full name is the same.

Note:
    A point at a (Sync)BatchNorm layer itself is lost when mmengine's runner
    converts SyncBN to BN (the layer is replaced); hook a module containing it.
"""
from __future__ import annotations

import difflib
import re
from dataclasses import dataclass
from typing import Any, Mapping, Optional, Sequence, Tuple, Union

from torch import nn

from ..keys import KeySpec, resolve_key
from .permutation import ChannelPermutation

__all__ = ['PointSpec', 'PointHook', 'PointPermutation', 'attach_permutations', 'POINTS_ATTR',
           'parse_points', 'find_module']

PointLike = Union[str, Mapping[str, Any], 'PointSpec']

#: Attribute of the root module that holds the attached permutations.
POINTS_ATTR = 'keyprotect_points'

_WHERE = ('input', 'output')
_POINT_RE = re.compile(r'(?P<path>[\w.]*?)(?::(?P<where>\w+))?(?:\[(?P<index>\d+)\])?')
_MAX_SUGGESTIONS = 8


@dataclass(frozen=True)
class PointSpec:
    """Where a permutation sits: a module path and a side of that module.

    Args:
        path: submodule path relative to the root (``''`` is the root itself).
        where: ``'output'`` (the value the module returns) or ``'input'`` (its
            first positional argument). Defaults to ``'output'``.
        index: if the value is a tuple/list, the element to permute. Defaults
            to None (the value is a tensor).
        channels: the channel count; None infers it on the first forward.
        channel_dim: the channel axis, 1 for ``(N, C, H, W)``, -1 for ``(N, L, C)``.

    Raises:
        ValueError: if a field has an invalid value.
    """

    path: str
    where: str = 'output'
    index: Optional[int] = None
    channels: Optional[int] = None
    channel_dim: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.path, str) or not re.fullmatch(r'[\w.]*', self.path) \
                or '..' in self.path or self.path.startswith('.') or self.path.endswith('.'):
            raise ValueError(f'point path must be a dotted module path, got {self.path!r}')
        if self.where not in _WHERE:
            raise ValueError(f'point {self.path!r}: where must be one of {_WHERE}, '
                             f'got {self.where!r}')
        if self.index is not None and (isinstance(self.index, bool)
                                       or not isinstance(self.index, int) or self.index < 0):
            raise ValueError(f'point {self.path!r}: index must be None or an integer >= 0, '
                             f'got {self.index!r}')

    @classmethod
    def parse(cls, spec: PointLike) -> 'PointSpec':
        """Make a :class:`PointSpec` from a string, a dict or a :class:`PointSpec`.

        Raises:
            ValueError: if ``spec`` is malformed or a dict has unknown fields.
        """
        if isinstance(spec, PointSpec):
            return spec
        if isinstance(spec, str):
            match = _POINT_RE.fullmatch(spec)
            if not spec or match is None:
                raise ValueError(f'cannot parse point {spec!r}; expected '
                                 "'PATH', 'PATH:input', 'PATH:output' or 'PATH:output[INDEX]'")
            index = match['index']
            return cls(match['path'], match['where'] or 'output',
                       None if index is None else int(index))
        if isinstance(spec, Mapping):
            unknown = set(spec) - set(cls.__dataclass_fields__)
            if unknown or 'path' not in spec:
                raise ValueError(f'point {dict(spec)!r}: needs path= and accepts only '
                                 f'{sorted(cls.__dataclass_fields__)}; got unknown fields '
                                 f'{sorted(unknown)}')
            return cls(**spec)
        raise ValueError(f'a point must be a string or a dict, got {type(spec).__name__}')

    def name(self, prefix: str = '') -> str:
        """The point's full name, ``'{prefix}.{path}:{where}[{index}]'``; also its key purpose."""
        path = '.'.join(part for part in (prefix, self.path) if part)
        index = '' if self.index is None else f'[{self.index}]'
        return f'{path}:{self.where}{index}'


class PointHook:
    """Mixin for a module that is applied at a :class:`PointSpec` through a hook.

    The module's ``__call__`` maps the tensor at the point to its replacement;
    this mixin picks that tensor out of the module's input or output (and out of
    a tuple/list when the point has an ``index``). Subclasses set ``self.point``
    and ``self.point_name`` (used in error messages).
    """

    point: PointSpec
    point_name: str

    def register_on(self, module: nn.Module) -> Any:
        """Install the hook on ``module`` (the module at the point's path).

        Returns:
            the hook's ``RemovableHandle``.
        """
        if self.point.where == 'input':
            return module.register_forward_pre_hook(self.input_hook)
        return module.register_forward_hook(self.output_hook)

    def input_hook(self, module: nn.Module, args: Tuple[Any, ...]) -> Tuple[Any, ...]:
        """Forward pre-hook: replace the first positional argument."""
        if not args:
            raise ValueError(f'point {self.point_name!r}: {type(module).__name__} was called '
                             'without positional arguments, so it has no input to transform')
        return (self._apply_to_value(args[0]), ) + tuple(args[1:])

    def output_hook(self, module: nn.Module, args: Tuple[Any, ...], output: Any) -> Any:
        """Forward hook: replace the output."""
        return self._apply_to_value(output)

    def _apply_to_value(self, value: Any) -> Any:
        index = self.point.index
        if index is None:
            if isinstance(value, (tuple, list)):
                raise ValueError(f'point {self.point_name!r}: the {self.point.where} is a '
                                 f'{type(value).__name__} of {len(value)} elements; choose one '
                                 f'with index=N (\'{self.point.path}:{self.point.where}[N]\')')
            return self(value)
        if not isinstance(value, (tuple, list)) or index >= len(value):
            size = len(value) if isinstance(value, (tuple, list)) else 'no'
            raise ValueError(f'point {self.point_name!r}: index {index} given, but the '
                             f'{self.point.where} is a {type(value).__name__} with {size} elements')
        items = list(value)
        items[index] = self(items[index])
        return tuple(items) if isinstance(value, tuple) else items


class PointPermutation(PointHook, ChannelPermutation):
    """A :class:`ChannelPermutation` that sits at a :class:`PointSpec` via a hook.

    Args:
        point: where it sits.
        key: the secret key or its source.
        prefix: prepended to the point's path in its name (the key purpose).
    """

    def __init__(self, point: PointSpec, key: KeySpec, prefix: str = '') -> None:
        super().__init__(point.channels, key, point.name(prefix), point.channel_dim)
        self.point = point
        self.point_name = self.purpose


def attach_permutations(root: nn.Module,
                        points: Union[PointLike, Sequence[PointLike]],
                        key: KeySpec = None,
                        prefix: str = '') -> nn.ModuleList:
    """Place a keyed channel permutation at each of ``points`` inside ``root``.

    Args:
        root: the module the paths are relative to (a segmentor, backbone, head ...).
        points: one point or a non-empty list of points (see :class:`PointSpec`).
        key: the secret key or its source, ``dict(file=PATH)`` / ``dict(env=NAME)``.
        prefix: prepended to every path in the points' names (key purposes),
            e.g. ``'backbone'`` when ``root`` is a backbone.

    Returns:
        nn.ModuleList: the :class:`PointPermutation` modules, also stored as
        ``root.keyprotect_points``.

    Raises:
        ValueError: if the key is missing, ``points`` is empty, a point is
            malformed, named twice or its path names no module of ``root``, a
            point's ``channels`` differs from the channel count its module
            declares, or ``root`` already has permutations attached.

    Example:
        >>> model = MODELS.build(cfg.model)  # doctest: +SKIP
        >>> attach_permutations(model, ['backbone.layer1:input',  # doctest: +SKIP
        ...                             'decode_head.conv_seg:input'], key=dict(env='KP_KEY'))
    """
    secret = resolve_key(key, 'channel permutation points')
    specs = parse_points(points)
    if hasattr(root, POINTS_ATTR):
        raise ValueError(f'{type(root).__name__} already has permutations attached '
                         f'({POINTS_ATTR}); give all points in one call')
    if isinstance(root, (nn.Sequential, nn.ModuleList, nn.ModuleDict)):
        raise ValueError(f'cannot attach permutations to a {type(root).__name__} (adding a child '
                         'would change what it runs); attach them to a module that holds it')
    modules = dict(root.named_modules())
    targets = [find_module(modules, spec, prefix) for spec in specs]
    for spec, target in zip(specs, targets):
        _check_declared_channels(spec, target, prefix)
    perms = nn.ModuleList(PointPermutation(spec, secret, prefix) for spec in specs)
    for perm, target in zip(perms, targets):
        perm.register_on(target)
    setattr(root, POINTS_ATTR, perms)
    return perms


def parse_points(points: Union[PointLike, Sequence[PointLike]]) -> Sequence[PointSpec]:
    if isinstance(points, (str, Mapping, PointSpec)):
        points = [points]
    specs = [PointSpec.parse(p) for p in points]
    if not specs:
        raise ValueError('no points given: list at least one point to permute, '
                         "e.g. points=['decode_head.conv_seg:input']")
    names = [spec.name() for spec in specs]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ValueError(f'points named more than once: {duplicates}')
    return specs


def find_module(modules: Mapping[str, nn.Module], spec: PointSpec, prefix: str) -> nn.Module:
    if spec.path in modules:
        return modules[spec.path]
    where = f' (inside {prefix!r})' if prefix else ''
    raise ValueError(f'point {spec.name(prefix)!r}: no module at path {spec.path!r}{where}; '
                     f'nearby modules: {", ".join(map(repr, _nearby(modules, spec.path)))}')


# Attributes through which common modules declare the channel count of their input / output.
_DECLARED_CHANNELS = {
    'input': ('in_channels', 'in_features', 'num_features'),
    'output': ('out_channels', 'out_features', 'num_features'),
}


def _check_declared_channels(spec: PointSpec, module: nn.Module, prefix: str) -> None:
    """Compare a point's ``channels`` with what its module declares (convs, linears, norms).

    Only a whole tensor (no ``index``) on a module that states its channel count
    (``in_channels``/``out_channels``, ``in_features``/``out_features`` or
    ``num_features``) is checked; otherwise the count is checked at the first forward.
    """
    if spec.channels is None or spec.index is not None:
        return
    for attr in _DECLARED_CHANNELS[spec.where]:
        declared = getattr(module, attr, None)
        if isinstance(declared, int) and not isinstance(declared, bool):
            if declared != spec.channels:
                raise ValueError(
                    f'point {spec.name(prefix)!r}: channels={spec.channels}, but '
                    f'{type(module).__name__} at {spec.path!r} has {attr}={declared}')
            return


def _nearby(modules: Mapping[str, nn.Module], path: str) -> Sequence[str]:
    """Names close to ``path``: similar names, then the children of its deepest existing parent."""
    parent = path
    while parent and parent not in modules:
        parent = parent.rpartition('.')[0]
    children = [name for name in modules if name and name.rpartition('.')[0] == parent]
    similar = difflib.get_close_matches(path, [name for name in modules if name],
                                        n=_MAX_SUGGESTIONS, cutoff=0.6)
    return list(dict.fromkeys(similar + children))[:_MAX_SUGGESTIONS]
