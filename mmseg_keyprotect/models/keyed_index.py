"""A module whose gather index is derived from its active key and never stored.

The base of the keyed modules that move features by an index (a channel
permutation, the unscrambling of a block-scrambled ViT's token grid): the index
is a *non-persistent* buffer, so it is never written to a ``state_dict`` or
checkpoint, is rebuilt when the active key changes and where the module is
unpickled, and follows the module's device.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from torch import Tensor, nn

from ..keyed import KeyedComponent
from ..keys import KeySpec, SecretKey

__all__ = ['KeyedIndexModule']


class KeyedIndexModule(nn.Module, KeyedComponent):
    """``self.index``: what :meth:`index_for` gives the active key (None when plain).

    Subclasses call :meth:`_init_index` at the end of ``__init__`` and implement
    :meth:`index_for`.
    """

    index: Optional[Tensor]

    def _init_index(self, key: KeySpec) -> None:
        """Register the (non-persistent) index buffer and derive it from ``key``."""
        self.register_buffer('index', None, persistent=False)
        self._init_key(key)
        self._on_key_change()

    def index_for(self, key: SecretKey) -> Optional[Tensor]:
        """The index ``key`` gives (None: not known yet)."""
        raise NotImplementedError

    def _on_key_change(self) -> None:
        self._derive_index(None if self.index is None else self.index.device)

    def _derive_index(self, device: Optional[torch.device]) -> None:
        """Set the index for the active key on ``device`` (``None`` when plain or not known).

        Made outside inference mode even when called inside it (a key switch or
        the first forward under ``torch.inference_mode()``), so a later forward
        with autograd can save it for backward.
        """
        with torch.inference_mode(False):
            index = None if self.active_key is None else self.index_for(self.active_key)
            self.index = None if index is None else index.to(device)

    def __getstate__(self) -> Dict[str, Any]:
        # The index is derived from the key: rebuild it where the module is unpickled.
        state = self.__dict__.copy()
        state['_buffers'] = {**state['_buffers'], 'index': None}
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        super().__setstate__(state)
        self._on_key_change()
