"""The small interface every keyed component honours.

A keyed component (a block cipher transform, a channel permutation, weight
encryption ...) holds the *correct* key it was configured with and an *active*
key that decides what it does now: the correct key (normal use and training),
``None`` (the *plain* condition: the component does nothing) or another key (an
*incorrect* key in evaluation). The protection object
(:class:`~mmseg_keyprotect.protection.Protection`) finds every keyed component
of a model and its pipelines and switches them together; a new kind of keyed
component implements this interface and nothing else has to change:

* :meth:`KeyedComponent.describe`: its entry in the checkpoint descriptor;
* :meth:`KeyedComponent.derived_tables`: what it derives from a key, so that
  incorrect keys can be drawn distinct;
* :meth:`KeyedComponent._on_key_change`: refresh derived state.

Its config type is registered for the attacker's view and size checks with
:func:`~mmseg_keyprotect.protection.keyed_type`.

Three kinds of keyed parts have a role the protection object reports on; each
is a small interface here, and only the protection object tests which one a
part honours (:attr:`~mmseg_keyprotect.protection.Protection.data_ciphers`,
:attr:`~mmseg_keyprotect.protection.Protection.permutations`,
:attr:`~mmseg_keyprotect.protection.Protection.weight_encryption`):

* :class:`ImageCipher`: encrypts images (the block ciphers of a pipeline or of
  the data preprocessor);
* :class:`FeaturePermutation`: permutes the channels of a feature map at a
  named point of the network;
* :class:`KeyedWeights`: the model's weight encryption.
"""
from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from .keys import KeySpec, SecretKey, resolve_key

__all__ = ['KeyedComponent', 'ImageCipher', 'FeaturePermutation', 'KeyedWeights']


class KeyedComponent:
    """Mixin for components whose behaviour depends on a secret key.

    Subclasses call :meth:`_init_key` in ``__init__`` and read
    :attr:`active_key` when they act; they may override :meth:`_on_key_change`
    to refresh derived state.
    """

    _correct_key: SecretKey
    _active_key: Optional[SecretKey]

    def _init_key(self, key: KeySpec) -> None:
        self._correct_key = resolve_key(key, type(self).__name__)
        self._active_key = self._correct_key

    @property
    def correct_key(self) -> SecretKey:
        """The key the component was configured (and trained) with."""
        return self._correct_key

    @property
    def active_key(self) -> Optional[SecretKey]:
        """The key in use now; ``None`` means plain (the component is a no-op)."""
        return self._active_key

    @property
    def key_condition(self) -> str:
        """``'correct'``, ``'plain'`` or ``'incorrect'``: what the active key is."""
        if self._active_key is None:
            return 'plain'
        return 'correct' if self._active_key == self._correct_key else 'incorrect'

    def use_key(self, key: Optional[SecretKey]) -> None:
        """Make ``key`` the active key (``None``: plain)."""
        if key is not None and not isinstance(key, SecretKey):
            raise TypeError(f'use_key expects a SecretKey or None, got {type(key).__name__}')
        self._active_key = key
        self._on_key_change()

    def use_correct_key(self) -> None:
        """Go back to the correct key."""
        self.use_key(self._correct_key)

    def describe(self) -> Dict[str, Any]:
        """A non-secret description for the checkpoint's protection descriptor.

        ``{'type': CLASS NAME, 'key': FINGERPRINT}``; subclasses add what tells
        their protection apart (a block size, a point). Two components that
        give the model the same inputs must describe themselves alike.
        """
        return {'type': type(self).__name__, 'key': self._correct_key.fingerprint}

    def derived_tables(self, key: SecretKey) -> Optional[bytes]:
        """Everything the component derives from ``key``, as bytes (``None``: not known).

        Incorrect keys are drawn so that these differ from the correct key's and
        from each other's; a component returning ``None`` is compared by key only.
        """
        return None

    def _on_key_change(self) -> None:
        """Hook for subclasses: the active key changed."""

    def _key_repr(self) -> str:
        """Non-secret description for ``repr``: fingerprint and condition."""
        return f'key=<{self._correct_key.fingerprint}>, condition={self.key_condition!r}'


class ImageCipher(KeyedComponent):
    """A keyed part that encrypts whole images, block by block.

    Attributes:
        block_size (int): the block side M; image sizes must be multiples of it.
    """

    block_size: int

    def encrypt(self, img: np.ndarray, key: Optional[SecretKey] = None) -> np.ndarray:
        """Encrypt one ``(H, W, C)`` image with ``key`` (default: the correct key)."""
        raise NotImplementedError


class FeaturePermutation(KeyedComponent):
    """A keyed permutation of the channels of a feature map at a point of the network.

    Attributes:
        purpose (str): the point's name (``'backbone.layer1:output'``); its key purpose.
        num_channels (int, optional): the channel count; None until the first forward
            of a lazily sized permutation.
    """

    purpose: str
    num_channels: Optional[int]


class KeyedWeights(KeyedComponent):
    """The model's weight encryption: its checkpoints are sealed with :attr:`key`.

    Attributes:
        allow_plaintext (bool): whether unsealed weights may still be loaded.
    """

    allow_plaintext: bool

    @property
    def key(self) -> SecretKey:
        """The key the weights are sealed with."""
        return self.correct_key
