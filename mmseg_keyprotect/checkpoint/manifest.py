"""The manifest: one MAC over the whole checkpoint file, so a file is whole or refused.

Groups are sealed one by one (:mod:`~mmseg_keyprotect.checkpoint.group`); the
manifest, stored as canonical JSON in ``meta[MANIFEST_KEY]``, binds them into
one file. It lists

* every sealed group: the entry and marker that hold its header, its kind, its
  salt (so a group of another file, even of the same key and run, is refused)
  and its tensor count;
* a digest of everything that is not a tensor, entry by entry (``meta`` but
  the manifest itself, ``message_hub``, ``param_schedulers``, anything else),
  where the place of every tensor counts too (so a tensor added in clear
  anywhere changes a digest);
* the run's identity and the iteration, for the rollback record
  (:mod:`~mmseg_keyprotect.checkpoint.rollback`);

and an HMAC-SHA256 of all of it under a key derived for this purpose. Every
group header of a file with a manifest says so (``'manifest': true``, under the
header's own HMAC), so stripping the manifest does not turn a file into one of
the versions that had none.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
from torch import Tensor

from ..keys import SecretKey
from .format import (MANIFEST_KEY, MARKER, TREE_MARKER, EncryptedWeightsError, canonical,
                     check_fields, read_header)

__all__ = ['MANIFEST_FORMAT', 'GroupPlace', 'group_headers', 'state_digests', 'build_manifest',
           'read_manifest', 'check_manifest']

MANIFEST_FORMAT = 'mmseg-keyprotect/manifest/v1'
_FIELDS = {'format': str, 'key': str, 'run': str, 'iter': (int, type(None)), 'groups': list,
           'state': dict, 'mac': str}

#: ``(entry, marker)`` of a group: where its header is.
GroupPlace = Tuple[str, str]


def _encode(node: Any) -> Any:
    """A JSON value standing for ``node``: its non-tensor content and where its tensors are."""
    if node is None or isinstance(node, (str, bool)):
        return node
    if isinstance(node, Tensor):
        return ['tensor']
    if isinstance(node, int):
        return ['int', str(node)]
    if isinstance(node, float):
        return ['float', repr(node)]
    if isinstance(node, (list, tuple)):
        return ['list' if isinstance(node, list) else 'tuple', [_encode(v) for v in node]]
    if isinstance(node, (dict, Mapping)):
        items = sorted(node.items(), key=lambda kv: (type(kv[0]).__name__, repr(kv[0])))
        return ['dict', [[_encode(k), _encode(v)] for k, v in items]]
    if isinstance(node, np.ndarray):
        return ['ndarray', node.dtype.str, list(node.shape),
                hashlib.sha256(np.ascontiguousarray(node).tobytes()).hexdigest()]
    if isinstance(node, np.generic):
        return ['numpy', node.dtype.str, repr(node.item())]
    if isinstance(node, bytes):
        return ['bytes', node.hex()]
    kind = f'{type(node).__module__}.{type(node).__qualname__}'
    if hasattr(node, '__dict__'):
        return ['object', kind, _encode(vars(node))]
    return ['object', kind, repr(node)]


def state_digests(checkpoint: Mapping[str, Any]) -> Dict[str, str]:
    """Entry name -> SHA-256 of its non-tensor content (``meta`` without the manifest)."""
    digests = {}
    for name, entry in checkpoint.items():
        if name == 'meta' and isinstance(entry, Mapping):
            entry = {k: v for k, v in entry.items() if k != MANIFEST_KEY}
        digests[str(name)] = hashlib.sha256(canonical(_encode(entry))).hexdigest()
    return digests


def group_headers(checkpoint: Mapping[str, Any]) -> Dict[GroupPlace, Dict[str, Any]]:
    """``(entry, marker)`` -> header of every sealed group in ``checkpoint``."""
    found = {}
    for name, entry in checkpoint.items():
        if not isinstance(entry, Mapping):
            continue
        for marker in [k for k in entry if isinstance(k, str) and
                       (k.endswith(MARKER) or k == TREE_MARKER)]:
            found[(str(name), marker)] = read_header(entry[marker],
                                                     f'checkpoint[{name!r}][{marker!r}]')
    return found


def _mac(key: SecretKey, manifest: Mapping[str, Any]) -> str:
    body = {k: v for k, v in manifest.items() if k != 'mac'}
    return hmac.new(key.derive_bytes('seal/manifest'), canonical(body),
                    hashlib.sha256).hexdigest()


def _group_rows(headers: Mapping[GroupPlace, Mapping[str, Any]]) -> List[Dict[str, Any]]:
    return sorted(({'entry': entry, 'marker': marker, 'kind': header['kind'],
                    'salt': header['salt'], 'tensors': len(header['tensors'])}
                   for (entry, marker), header in headers.items()), key=canonical)


def build_manifest(checkpoint: Mapping[str, Any], key: SecretKey, run: str) -> str:
    """The manifest of ``checkpoint`` as it is now (every group sealed), as canonical JSON."""
    meta = checkpoint.get('meta') or {}
    iteration = meta.get('iter')
    manifest = {'format': MANIFEST_FORMAT, 'key': key.fingerprint, 'run': str(run),
                'iter': int(iteration) if iteration is not None else None,
                'groups': _group_rows(group_headers(checkpoint)),
                'state': state_digests(checkpoint)}
    manifest['mac'] = _mac(key, manifest)
    return canonical(manifest).decode()


def read_manifest(checkpoint: Mapping[str, Any], key: SecretKey) -> Optional[Dict[str, Any]]:
    """The authenticated manifest of ``checkpoint``, or None if it has none.

    Raises:
        EncryptedWeightsError: if it is not a manifest, lacks a field, belongs to
            another key or fails authentication.
    """
    text = (checkpoint.get('meta') or {}).get(MANIFEST_KEY)
    if text is None:
        return None
    where = f"the checkpoint's manifest (meta[{MANIFEST_KEY!r}])"
    try:
        manifest = json.loads(text)
    except (TypeError, ValueError):
        manifest = None
    if not isinstance(manifest, dict) or manifest.get('format') != MANIFEST_FORMAT:
        raise EncryptedWeightsError(f'{where} is not a {MANIFEST_FORMAT} manifest: it was '
                                    'edited or damaged')
    check_fields(manifest, _FIELDS, where)
    if manifest['key'] != key.fingerprint:
        raise EncryptedWeightsError(
            f'{where} is for the key of fingerprint {manifest["key"]}, but the model was given '
            f'the key of fingerprint {key.fingerprint}; give the key the model was trained with')
    if not hmac.compare_digest(manifest['mac'], _mac(key, manifest)):
        raise EncryptedWeightsError(f'{where} failed authentication: it was edited')
    return manifest


def check_manifest(checkpoint: Mapping[str, Any], manifest: Mapping[str, Any]) -> None:
    """Refuse ``checkpoint`` unless its groups and non-tensor state are what ``manifest`` lists.

    Raises:
        EncryptedWeightsError: one line naming the first group or entry that differs.
    """
    listed = {(row.get('entry'), row.get('marker')): row for row in manifest['groups']
              if isinstance(row, dict)}
    present = {(r['entry'], r['marker']): r for r in _group_rows(group_headers(checkpoint))}
    for place in sorted(set(listed) | set(present), key=repr):
        where = f'checkpoint[{place[0]!r}][{place[1]!r}]'
        if place not in present:
            raise EncryptedWeightsError(f'{where}: the sealed group the manifest lists is '
                                        'missing: it was removed')
        if place not in listed:
            raise EncryptedWeightsError(f'{where}: a sealed group the manifest does not list: '
                                        'it was added from another file')
        if present[place]['salt'] != listed[place].get('salt'):
            raise EncryptedWeightsError(f'{where}: the sealed group belongs to another file (its '
                                        'salt is not the one the manifest lists)')
        if present[place] != listed[place]:
            raise EncryptedWeightsError(f'{where}: the sealed group differs from the manifest '
                                        '(kind or tensor count): it was edited')
    expected, actual = manifest['state'], state_digests(checkpoint)
    for name in sorted(set(expected) | set(actual)):
        if expected.get(name) != actual.get(name):
            change = 'added' if name not in expected else 'removed' if name not in actual \
                else 'edited'
            raise EncryptedWeightsError(
                f'checkpoint[{name!r}] was {change} after the file was sealed (its content, '
                'tensors aside, is not what the manifest records)')
