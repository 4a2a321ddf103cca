"""Everyday saves of a protected model: no part pickles, a clear ``state_dict`` warns once.

A protected segmentor refuses to be pickled (``torch.save(model)``): the pickle
would hold its weights in clear and what is derived from its key.
:func:`guard_parts` extends that to every part of it: each submodule holds the
same :class:`SaveGuard` (as a ``state_dict`` post-hook), which refuses to be
pickled, so ``torch.save(model.backbone)``, ``torch.save(nn.ModuleList(
model.children()))`` or a pickled ``deepcopy`` of a part are refused with one
line naming the safe way. ``copy.deepcopy`` still works (mmengine's EMA): the
copy shares the guard.

With ``encrypt_weights``, taking the clear ``state_dict`` of the model or of
any part (``model.state_dict()``, mmengine's ``get_state_dict``, a
``deepcopy``'s ``state_dict``) warns once per model with
:class:`ClearWeightsWarning`, outside the paths that seal what they take
(:func:`~mmseg_keyprotect.checkpoint.sealing`: the runner's saves and hooks,
the model's load hook, ``sealed_state_dict``, ``apis.export_sealed``). It warns
rather than refuses: the weights in memory are clear anyway, and mmengine,
evaluation code and user code read ``state_dict`` for many things besides
writing it to a file (see ``docs/security.md``).
"""
from __future__ import annotations

import warnings
from typing import Any, Dict, NoReturn

from torch import nn

from ..checkpoint import sealing_active

__all__ = ['ClearWeightsWarning', 'SaveGuard', 'guard_parts']

_SAFE_WAY = ('save checkpoints with the runner (sealed), torch.save(sealed_state_dict(model)) '
             '(mmseg_keyprotect.models.weight_encryption), or export for deployment with '
             'mmseg_keyprotect.apis.export_sealed(model, path)')


class ClearWeightsWarning(UserWarning):
    """The clear ``state_dict`` of a model with ``encrypt_weights`` was taken."""


class SaveGuard:
    """Held by every part of a protected model: refuses pickling, warns once on a clear state_dict.

    Args:
        owner: the protected model's class name (for messages).
        warn: warn on a clear ``state_dict`` (the model encrypts its weights).
    """

    def __init__(self, owner: str, warn: bool) -> None:
        self.owner = owner
        self.warn = warn
        self.warned = False

    def __call__(self, module: nn.Module, state_dict: Dict[str, Any], prefix: str,
                 local_metadata: Any) -> None:
        """``state_dict`` post-hook: warn once outside the sealing paths."""
        if self.warn and not self.warned and not sealing_active():
            self.warned = True
            warnings.warn(
                f'the state_dict of {self.owner} (encrypt_weights=True) holds its weights in '
                f'clear: written to a file, it is the unprotected model; {_SAFE_WAY}',
                ClearWeightsWarning, stacklevel=3)

    def __reduce_ex__(self, protocol: int) -> NoReturn:
        raise TypeError(f'refusing to pickle a part of the protected {self.owner}: the pickle '
                        f'would hold its weights in clear and what is derived from its key; '
                        f'{_SAFE_WAY}')

    def __deepcopy__(self, memo: Dict[int, Any]) -> 'SaveGuard':
        return self

    def __repr__(self) -> str:
        return f'SaveGuard({self.owner})'


def guard_parts(model: nn.Module, warn: bool) -> SaveGuard:
    """Give every submodule of ``model`` (itself included) one :class:`SaveGuard`.

    Args:
        model: the protected segmentor, fully built (parts added later are not guarded).
        warn: warn once on a clear ``state_dict`` (``encrypt_weights``).
    """
    guard = SaveGuard(type(model).__name__, warn)
    for module in model.modules():
        module.register_state_dict_post_hook(guard)
    return guard
