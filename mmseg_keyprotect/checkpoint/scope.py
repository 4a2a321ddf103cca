"""Where a clear ``state_dict`` of a weight-encrypting model may be taken without a warning.

A model with ``encrypt_weights`` warns once when its clear ``state_dict`` is
taken (:mod:`~mmseg_keyprotect.models.save_guard`), except inside
:func:`sealing`: the code paths that seal what they take (the runner's save and
hooks, :func:`~mmseg_keyprotect.checkpoint.seal_checkpoint`, the model's own
load hook, :func:`~mmseg_keyprotect.models.weight_encryption.sealed_state_dict`,
:func:`~mmseg_keyprotect.apis.export_sealed`).
"""
from __future__ import annotations

import contextlib
import contextvars
from typing import Iterator

__all__ = ['sealing', 'sealing_active']

_SEALING = contextvars.ContextVar('keyprotect_sealing', default=False)


@contextlib.contextmanager
def sealing() -> Iterator[None]:
    """Mark the code inside as a path that seals the weights it takes (nests)."""
    token = _SEALING.set(True)
    try:
        yield
    finally:
        _SEALING.reset(token)


def sealing_active() -> bool:
    """Whether the caller runs inside :func:`sealing`."""
    return _SEALING.get()
