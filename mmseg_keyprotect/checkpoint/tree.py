"""Seal and open a whole checkpoint: model groups, one tree group per entry, the manifest.

:func:`seal_checkpoint` turns every tensor and numpy array of an mmengine
checkpoint, ``meta`` included, into ciphertext: copies of the model's
``state_dict`` (``state_dict``, and the ``module.*`` copy in ``ema_state_dict``)
become model groups, opened by the model's load hook; every other tensor of an
entry goes into one tree group per entry, under ``entry[TREE_MARKER]``; then
the manifest (:mod:`~mmseg_keyprotect.checkpoint.manifest`) binds them into one
file. It may run again on the same checkpoint (the runner's last walk before
writing): what is sealed stays, what was added since is sealed, the manifest is
made anew.

Loading: :func:`authenticate` checks the stored descriptor (or that an unsealed
checkpoint is allowed), :func:`verify_file` that no tensor is in clear and that
the file is what its manifest lists, :func:`open_checkpoint` opens the tree
groups in place, all or nothing. :func:`upgrade_checkpoint` gives a file
sealed before manifests existed its manifest.
"""
from __future__ import annotations

import copy
import hmac
from typing import Any, Dict, List, Mapping, Optional, Sequence, Set, Tuple, Union

import numpy as np
import torch
from torch import Tensor, nn

from ..keys import SecretKey
from ..protection import Protection
from .format import (MANIFEST_KEY, MARKER, META_KEY, META_MAC_KEY, TREE_MARKER, Descriptor,
                     EncryptedWeightsError, TreePath, canonical, descriptor_mac, header_mac,
                     is_sealed, read_header, show_path)
from .group import SealedGroup, holds_its_tag, seal
from .manifest import build_manifest, check_manifest, group_headers, read_manifest
from .scope import sealing

__all__ = ['tensors_with_paths', 'seal_state_dict', 'seal_checkpoint', 'seal_file',
           'open_checkpoint',
           'authenticate', 'verify_file', 'upgrade_checkpoint']

Leaf = Union[Tensor, np.ndarray]


def _leaves(node: Any, path: TreePath = ()) -> List[Tuple[TreePath, Leaf]]:
    """Every tensor and numpy array inside nested dicts/lists/tuples, with its path."""
    if isinstance(node, (Tensor, np.ndarray)):
        return [(path, node)]
    if isinstance(node, Mapping):
        return [found for k, v in node.items() for found in _leaves(v, path + (k, ))]
    if isinstance(node, (list, tuple)):
        return [found for i, v in enumerate(node) for found in _leaves(v, path + (i, ))]
    return []


def _has_leaves(node: Any) -> bool:
    """Whether a tensor or numpy array is anywhere inside ``node`` (stops at the first)."""
    if isinstance(node, (Tensor, np.ndarray)):
        return True
    if isinstance(node, dict):
        return any(_has_leaves(v) for v in node.values())
    if isinstance(node, (list, tuple)):
        return any(_has_leaves(v) for v in node)
    return False


def tensors_with_paths(node: Any, path: TreePath = ()) -> List[Tuple[TreePath, Tensor]]:
    """Every tensor inside nested dicts/lists/tuples, with its path."""
    return [(p, leaf) for p, leaf in _leaves(node, path) if isinstance(leaf, Tensor)]


def _get(node: Any, path: TreePath) -> Any:
    for step in path:
        node = node[step]
    return node


def _put(node: Any, path: TreePath, value: Leaf) -> None:
    for step in path[:-1]:
        node = node[step]
    if isinstance(node, tuple):
        raise TypeError('cannot replace a tensor inside a tuple')
    node[path[-1]] = value


def _thaw(node: Any) -> Any:
    """Tuples to lists, so tensors inside can be replaced (optimizer ``betas`` are not tensors)."""
    if isinstance(node, Mapping):
        for k in list(node):
            node[k] = _thaw(node[k])
        return node
    if isinstance(node, (list, tuple)) and _has_leaves(node):
        return [_thaw(v) for v in node]
    return node


def _own_containers(node: Any) -> Any:
    """A copy of the dicts and lists that lead to tensors and arrays (leaves shared).

    ``optimizer.state_dict()`` hands out the optimizer's own per-parameter
    dicts: sealing must put ciphertext into copies, never into the live state.
    """
    if isinstance(node, dict) and _has_leaves(node):
        copied = copy.copy(node)  # keeps the type and attributes (a state_dict's _metadata)
        for k, v in node.items():
            copied[k] = _own_containers(v)
        return copied
    if isinstance(node, (list, tuple)) and _has_leaves(node):
        return [_own_containers(v) for v in node]
    return node


def seal_state_dict(state_dict: Dict[str, Any], key: SecretKey, descriptor: Descriptor,
                    prefix: str = '', names: Optional[Sequence[str]] = None,
                    listed: bool = False) -> None:
    """Seal a model's ``state_dict`` in place (header at ``prefix + MARKER``).

    Args:
        state_dict: holds the model's tensors as ``prefix + name``.
        key: the key to seal with.
        descriptor: the model's protection (``Protection.of(model).describe()``).
        prefix: where the model's names start (``'module.'`` in an EMA copy).
        names: the model's names (relative to ``prefix``); by default every
            tensor under ``prefix``.
        listed: the group will be listed in its file's manifest (a
            ``state_dict`` saved alone has none).
    """
    if names is None:
        names = [name[len(prefix):] for name, value in state_dict.items()
                 if name.startswith(prefix) and isinstance(value, Tensor)]
    sealed, header = seal([((name, ), state_dict[prefix + name]) for name in names], key,
                          descriptor, 'model', {'manifest': True} if listed else None)
    for name, tensor in zip(names, sealed):
        state_dict[prefix + name] = tensor
    state_dict[prefix + MARKER] = header


def seal_checkpoint(checkpoint: Dict[str, Any], model: nn.Module, key: SecretKey,
                    descriptor: Descriptor, run: Optional[str] = None) -> None:
    """Seal every tensor and numpy array of ``checkpoint`` in place, then write its manifest.

    Copies of the model's ``state_dict`` (``state_dict``, and ``module.*`` in
    ``ema_state_dict``) become model groups, opened by the model's load hook;
    every other tensor or array of an entry (``meta`` included) goes into one
    tree group per entry, under ``entry[TREE_MARKER]``. Groups already sealed
    stay as they are. Only ``checkpoint`` and copies of its containers are
    changed: the dicts it shares with a live optimizer or model are not.

    Args:
        checkpoint: an mmengine checkpoint, changed in place.
        model: the model whose ``state_dict`` copies become model groups.
        key: the key to seal with.
        descriptor: the protection stored in ``meta[META_KEY]``.
        run: the run's identity; with it, the groups are listed in a manifest
            written to ``meta[MANIFEST_KEY]`` (None: no manifest, as before).

    Raises:
        TypeError: an entry that is not a dict holds tensors or arrays, or an
            array cannot become a tensor.
    """
    listed = run is not None
    model_names: List[str] = []
    for name, entry in checkpoint.items():
        if not _has_leaves(entry):
            continue
        if not isinstance(entry, dict):
            raise TypeError(f'checkpoint[{name!r}] is a {type(entry).__name__} holding tensors; '
                            'only dict entries can be sealed')
        entry = checkpoint[name] = _own_containers(entry)
        _reopen_changed_groups(entry, f'checkpoint[{name!r}]', key)
        covered = _covered(entry)
        if all(path in covered for path, _ in _leaves(entry)):
            continue  # sealed already (the runner's last walk finds most entries so)
        if not model_names:
            with sealing():
                model_names = list(model.state_dict(keep_vars=True).keys())
            model_descriptor = Protection.of(model).describe()
        if model_names:
            prefixes = {k[:-len(model_names[0])] for k in entry
                        if isinstance(k, str) and k.endswith(model_names[0])}
            for prefix in sorted(prefixes):
                if prefix + MARKER not in entry and \
                        all(isinstance(entry.get(prefix + n), Tensor) for n in model_names):
                    seal_state_dict(entry, key, model_descriptor, prefix, model_names, listed)
        covered = _covered(entry)
        rest = [(path, leaf) for path, leaf in _leaves(_thaw(entry)) if path not in covered]
        if not rest:
            continue
        arrays = [list(path) for path, leaf in rest if isinstance(leaf, np.ndarray)]
        tensors = [(path, _as_tensor(leaf, name, path)) for path, leaf in rest]
        fields = {'manifest': True} if listed else {}
        if arrays:
            fields['arrays'] = arrays
        sealed, header = seal(tensors, key, descriptor, 'tree', fields or None)
        for (path, _), tensor in zip(rest, sealed):
            _put(entry, path, tensor)
        entry[TREE_MARKER] = header
    if listed:
        meta = checkpoint.setdefault('meta', {})
        meta.pop(MANIFEST_KEY, None)
        meta[MANIFEST_KEY] = build_manifest(checkpoint, key, run)


def _reopen_changed_groups(entry: Dict[str, Any], where: str, key: SecretKey) -> None:
    """Open again, in ``entry``, each group sealed earlier in this save that changed since.

    A hook that runs after the seal may replace a sealed tensor (mmengine reuses
    one ``meta`` dict for the best and the last checkpoint) or add one to a sealed
    entry: the group's other tensors are decrypted back into the entry and its
    header dropped, so the caller seals all of them again, the new ones included.
    A tensor counts as replaced unless it is still the ciphertext with its tag.
    """
    model_paths = _model_group_paths(entry)
    for marker in [k for k in entry if isinstance(k, str) and
                   (k.endswith(MARKER) or k == TREE_MARKER)]:
        header = read_header(entry[marker], f'{where}[{marker!r}]')
        if marker == TREE_MARKER:
            place = {tuple(path): tuple(path) for path, _ in header['tensors']}
            others = {path for path, _ in _leaves(entry)} - model_paths - {(TREE_MARKER, )}
        else:
            prefix = marker[:-len(MARKER)]
            place = {tuple(path): (prefix + path[0], ) for path, _ in header['tensors']}
            others = set()
        tags = {tuple(path): tag for path, tag in header['tensors']}
        intact = {path: _get(entry, at) for path, at in place.items()
                  if _exists(entry, at) and holds_its_tag(_get(entry, at), tags[path])}
        if len(intact) == len(place) and others <= set(place.values()):
            continue
        opened = SealedGroup(header, intact, key, None, where, subset=True).open()
        arrays = {tuple(path) for path in header.get('arrays', [])}
        del entry[marker]
        for path, tensor in opened.items():
            _put(entry, place[path], tensor.numpy() if path in arrays else tensor)
        model_paths = _model_group_paths(entry)


def _exists(node: Any, path: TreePath) -> bool:
    try:
        _get(node, path)
    except (KeyError, IndexError, TypeError):
        return False
    return True


def seal_file(checkpoint: Dict[str, Any], model: nn.Module, key: SecretKey, run: str,
              descriptor: Optional[Descriptor] = None) -> None:
    """Make ``checkpoint`` a sealed file: descriptor and its HMAC in ``meta``, every tensor
    sealed, the manifest written (:func:`seal_checkpoint` with ``run``).

    Args:
        descriptor: stored in ``meta[META_KEY]`` if not there yet; by default the model's.
    """
    meta = checkpoint.setdefault('meta', {})
    if META_KEY not in meta:
        meta[META_KEY] = descriptor if descriptor is not None else \
            Protection.of(model).describe()
    meta[META_MAC_KEY] = descriptor_mac(key, meta[META_KEY])
    seal_checkpoint(checkpoint, model, key, meta[META_KEY], run)


def _as_tensor(leaf: Leaf, name: str, path: TreePath) -> Tensor:
    if isinstance(leaf, Tensor):
        return leaf
    try:
        return torch.from_numpy(np.ascontiguousarray(leaf))
    except TypeError:
        raise TypeError(f'checkpoint[{name!r}]: {show_path(path)!r} is a numpy array of dtype '
                        f'{leaf.dtype}, which cannot be sealed; store it as a tensor or a list'
                        ) from None


def _model_group_paths(entry: Mapping[str, Any]) -> Set[TreePath]:
    """The paths of the sealed model groups' tensors and headers in ``entry``."""
    paths: Set[TreePath] = set()
    for name in [k for k in entry if isinstance(k, str) and k.endswith(MARKER)]:
        prefix = name[:-len(MARKER)]
        header = read_header(entry[name], f'{MARKER!r} at {prefix!r}')
        paths |= {(prefix + path[0], ) for path, _ in header['tensors']} | {(name, )}
    return paths


def _covered(entry: Mapping[str, Any]) -> Set[TreePath]:
    """The paths of ``entry`` that its sealed groups hold: their tensors and their headers."""
    paths = _model_group_paths(entry)
    if TREE_MARKER in entry:
        header = read_header(entry[TREE_MARKER], f'{TREE_MARKER!r}')
        paths |= {tuple(path) for path, _ in header['tensors']} | {(TREE_MARKER, )}
    return paths


def open_checkpoint(checkpoint: Dict[str, Any], key: SecretKey, descriptor: Descriptor) -> None:
    """Open every tree group of ``checkpoint`` in place (model groups stay for the model).

    Each tensor is decrypted over its own ciphertext where only this process can
    change that memory (otherwise into new memory), and checked as it is: if
    any tag of any group fails, every group is encrypted back as it was
    (:meth:`~mmseg_keyprotect.checkpoint.group.SealedGroup.undo`) and
    nothing is written back.

    Raises:
        EncryptedWeightsError: naming the entry and what failed.
    """
    groups = []
    for name, entry in checkpoint.items():
        if not isinstance(entry, dict) or TREE_MARKER not in entry:
            continue
        where = f'checkpoint[{name!r}]'
        header = read_header(entry[TREE_MARKER], where)
        if header.get('kind') != 'tree':
            raise EncryptedWeightsError(f'{where}: {TREE_MARKER!r} is not a tree header')
        covered = _model_group_paths(entry) | {(TREE_MARKER, )}
        tensors = {path: t for path, t in tensors_with_paths(_thaw(entry)) if path not in covered}
        # decrypted in place: the loaded ciphertext's memory becomes the plaintext's
        groups.append((entry, SealedGroup(header, tensors, key, descriptor, where, into=tensors)))
    opened: List[Tuple[Dict[str, Any], SealedGroup, Dict[TreePath, Tensor]]] = []
    try:
        for entry, group in groups:
            opened.append((entry, group, group.open()))
    except EncryptedWeightsError:
        for _, group, _ in opened:
            group.undo()
        raise
    for entry, _, tensors in opened:
        arrays = {tuple(path) for path in read_header(entry.pop(TREE_MARKER)).get('arrays', [])}
        for path, tensor in tensors.items():
            _put(entry, path, tensor.numpy() if path in arrays else tensor)


def authenticate(checkpoint: Mapping[str, Any], key: SecretKey, allow_plaintext: bool) -> bool:
    """Check the stored descriptor's key and HMAC, or that an unsealed checkpoint is allowed.

    Returns:
        bool: whether the checkpoint is sealed (False: unsealed and allowed).

    Raises:
        EncryptedWeightsError: another key, an edited or removed descriptor, or an
            unsealed checkpoint without ``allow_plaintext``.
    """
    meta = checkpoint.get('meta') or {}
    stored, mac = meta.get(META_KEY), meta.get(META_MAC_KEY)
    sealed = any(isinstance(e, dict) and (TREE_MARKER in e or is_sealed(e))
                 for e in checkpoint.values())
    if mac is None and not sealed:
        if allow_plaintext:
            return False
        raise EncryptedWeightsError(
            'the checkpoint is not sealed (plaintext weights, or its headers and descriptor '
            'HMAC were stripped): refusing to load it into a model with encrypt_weights=True; '
            'to start from unencrypted weights on purpose, set '
            'protection.allow_plaintext_weights=True')
    fingerprints = sorted({e.get('key') for e in stored or () if isinstance(e, dict) and
                           e.get('type') == 'WeightEncryption'})
    if fingerprints and fingerprints != [key.fingerprint]:
        raise EncryptedWeightsError(
            f'the checkpoint is encrypted with the key of fingerprint {", ".join(fingerprints)}, '
            f'but the model was given the key of fingerprint {key.fingerprint}; give the key the '
            'model was trained with')
    well_formed = isinstance(stored, list) and all(isinstance(e, dict) for e in stored)
    if not well_formed or mac is None or not hmac.compare_digest(
            str(mac), descriptor_mac(key, stored)):
        raise EncryptedWeightsError(
            f"the checkpoint's protection descriptor (meta[{META_KEY!r}]) failed "
            'authentication: it was edited or removed')
    return True


def verify_file(checkpoint: Mapping[str, Any], key: SecretKey) -> Optional[Dict[str, Any]]:
    """Refuse a sealed checkpoint with a tensor in clear, or that differs from its manifest.

    Checks, before anything is decrypted: every tensor of every entry is in a
    sealed group; the manifest is authentic, lists exactly the groups present
    (salt, kind, tensor count) and the non-tensor state as it is. A file sealed
    before manifests existed passes without one (the caller warns); a file
    whose groups say they are listed in a manifest does not.

    Returns:
        dict or None: the manifest (None: the file predates manifests).

    Raises:
        EncryptedWeightsError: one line naming the entry and what is wrong.
    """
    headers = group_headers(checkpoint)
    for name, entry in checkpoint.items():
        covered = _covered(entry) if isinstance(entry, Mapping) else set()
        clear = [path for path, _ in tensors_with_paths(entry) if path not in covered]
        if clear:
            raise EncryptedWeightsError(
                f'checkpoint[{name!r}] holds a tensor in clear ({show_path(clear[0]) or name!r}) '
                'that no sealed group covers: its sealed header was removed or the tensor '
                'added; refusing to load it into a model with encrypt_weights=True')
    manifest = read_manifest(checkpoint, key)
    if manifest is None:
        listed = sorted(f'checkpoint[{e!r}][{m!r}]' for (e, m), h in headers.items()
                        if h.get('manifest'))
        if listed:
            raise EncryptedWeightsError(
                f"the checkpoint's manifest (meta[{MANIFEST_KEY!r}]) was removed: {listed[0]} "
                'says it is listed in one')
        return None
    check_manifest(checkpoint, manifest)
    return manifest


def upgrade_checkpoint(checkpoint: Dict[str, Any], key: SecretKey, run: str) -> bool:
    """Give a checkpoint sealed before manifests existed its manifest, in place.

    Every group is verified first (each tag; nothing is decrypted), then its
    header is marked as listed and MAC'd again, and the manifest is written.

    Args:
        checkpoint: a loaded checkpoint, changed in place.
        key: the key it is sealed with.
        run: the run identity to record (e.g. the run's ``experiment_name``).

    Returns:
        bool: False if it already has a manifest (nothing changed).

    Raises:
        EncryptedWeightsError: it is not sealed with ``key``, or fails authentication.
    """
    authenticate(checkpoint, key, allow_plaintext=False)
    if verify_file(checkpoint, key) is not None:
        return False
    for (name, marker), header in group_headers(checkpoint).items():
        entry = checkpoint[name]
        prefix = marker[:-len(MARKER)] if marker != TREE_MARKER else None
        tensors = {tuple(path): entry[prefix + path[0]] if prefix is not None else
                   _get(entry, tuple(path)) for path, _ in header['tensors']}
        SealedGroup(header, tensors, key, None, f'checkpoint[{name!r}]').verify()
        header['manifest'] = True
        header['mac'] = header_mac(key, header)
        entry[marker] = torch.from_numpy(np.frombuffer(canonical(header), np.uint8).copy())
    checkpoint['meta'][MANIFEST_KEY] = build_manifest(checkpoint, key, run)
    return True
