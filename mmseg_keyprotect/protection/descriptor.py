"""The protection descriptor: formatting and comparing descriptors, checking key fingerprints.

A descriptor is a list of non-secret entries, one per keyed part
(``{'type': 'BlockShuffle', 'block_size': 2, 'key': FINGERPRINT}``); it is stored in
checkpoint meta and reports. A fingerprint identifies a key without revealing it.
"""
from __future__ import annotations

from typing import Any, Dict, List, Sequence

from ..keys import SecretKey

__all__ = ['Descriptor', 'ProtectionMismatchError', 'KeyMismatchError', 'format_protection',
           'check_protection', 'check_key_fingerprints']

Descriptor = List[Dict[str, Any]]


class ProtectionMismatchError(ValueError):
    """A checkpoint's stored protection differs from the protection of the config."""


class KeyMismatchError(ProtectionMismatchError):
    """The key given for a checkpoint is not the key it was trained with."""


def format_protection(descriptor: Descriptor) -> str:
    """``'[BlockShuffle(block_size=2, key=<fingerprint>)]'``; ``'none'`` when empty."""
    if not descriptor:
        return 'none'
    items = []
    for entry in descriptor:
        fields = ', '.join(f'{k}={v!r}' for k, v in entry.items() if k not in ('type', 'key'))
        items.append(f"{entry['type']}({fields + ', ' if fields else ''}key=<{entry['key']}>)")
    return '[' + ', '.join(items) + ']'


def check_protection(stored: Descriptor, current: Descriptor, what: str = 'checkpoint') -> None:
    """Raise unless a checkpoint's stored protection equals the config's.

    Args:
        stored: the descriptor saved in the checkpoint's meta.
        current: :meth:`Protection.describe` of the model and data being run.
        what: how to name the checkpoint in the message.

    Raises:
        ProtectionMismatchError: saying what was stored, what the config has,
            and which entries differ.
    """
    stored_set = {tuple(sorted(e.items())) for e in stored}
    current_set = {tuple(sorted(e.items())) for e in current}
    if stored_set == current_set:
        return
    only_stored = [dict(e) for e in sorted(stored_set - current_set, key=repr)]
    only_current = [dict(e) for e in sorted(current_set - stored_set, key=repr)]
    raise ProtectionMismatchError(
        f'{what} was trained with protection {format_protection(stored)}, but the config has '
        f'{format_protection(current)} (only in the {what}: {format_protection(only_stored)}; '
        f'only in the config: {format_protection(only_current)}). Evaluate it with the config '
        'and key it was trained with')


def check_key_fingerprints(stored: Descriptor, keys: Sequence[SecretKey],
                           what: str = 'checkpoint') -> None:
    """Raise unless ``keys`` are exactly the keys recorded in a stored descriptor.

    Compares fingerprints only, before a model is built or run, so a wrong key
    file fails with a clear message instead of giving poor segmentation.

    Raises:
        KeyMismatchError: showing both sets of fingerprints (non-secret) and
            where the given keys came from.
    """
    expected = sorted({entry['key'] for entry in stored if 'key' in entry})
    given = {key.fingerprint: key.source for key in keys}
    if set(expected) == set(given):
        return
    shown = ', '.join(f'{fp} (from {src})' for fp, src in sorted(given.items())) or 'none'
    raise KeyMismatchError(
        f'key fingerprint {shown} does not match the fingerprint '
        f'{", ".join(expected) or "none"} recorded in the {what}: this is not the key the '
        'model was trained with')
