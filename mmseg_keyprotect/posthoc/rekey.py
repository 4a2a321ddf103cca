"""Key rotation without retraining: the same model under a new key, exactly.

A model protected by channel permutations (trained under key A, or
transformed after training) runs ``t[:, alpha]`` at each point; the model
under key B runs ``t[:, beta]``. The consumers of each point (and every
channel-wise layer and residual stream in between) are transformed by
``alpha^-1[beta]``, as when absorbing (:mod:`.channels`): under key B the new
weights compute exactly what the old ones computed under key A, and key A no
longer fits them.

Block ciphers on a CNN cannot be moved into the weights: a convolution's
window crosses the borders of the cipher's blocks, so no change of weights
turns images encrypted under B into what the model learned under A;
:func:`rekey_permutations` refuses them in one line.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, List, Optional, Tuple

from torch import Tensor, nn

from ..keys import KeySpec, resolve_key
from ..models.permutation import channel_permutation_index
from ..protection import Protection
from .absorb import DEFAULT_ATOL, apply_weights, check_same_outputs, transformed_weights
from .segmentor import probe_input

__all__ = ['Rekeyed', 'rekey_permutations', 'refuse_block_ciphers', 'block_ciphers']

#: Descriptor types of block scrambling (the cipher and the model's unscrambling).
SCRAMBLING = ('BlockScramble', 'BlockUnscramble')


@dataclass
class Rekeyed:
    """What :func:`rekey_permutations` made.

    Attributes:
        state_dict: every weight, transformed for the new key.
        points: the names of the points rekeyed.
        changed: the names of the tensors that changed.
        max_difference: the largest |output difference| measured between the
            model under the new key and the model under the old key.
    """

    state_dict: Dict[str, Tensor]
    points: List[str]
    changed: List[str]
    max_difference: float


def block_ciphers(protection: Protection) -> List[str]:
    """``'BlockShuffle (block size 4)'`` for every block cipher ``protection`` describes,
    built or in its config's pipelines."""
    found = [e for e in protection.describe() if 'block_size' in e]
    if protection.cfg is not None:
        found += [step for _, step in protection.pipeline_steps()]
    return sorted({f"{e['type']} (block size {e.get('block_size')})" for e in found})


def refuse_block_ciphers(protection: Protection, what: str) -> None:
    """Raise if ``protection`` has a block cipher: rotating it needs retraining on a CNN
    (block scrambling: protecting the original model again).

    Raises:
        ValueError: one line naming the cipher and why.
    """
    scrambled = any(e['type'] in SCRAMBLING for e in protection.describe())
    if protection.cfg is not None:
        scrambled |= 'block_scramble' in ((protection.cfg.get('model') or {}).get('protection')
                                          or {})
    if scrambled:
        raise ValueError(
            f'{what}: cannot change the key of a block-scrambled model: its position and patch '
            'embeddings are transformed for the old key; protect the original checkpoint '
            'again with the new key (tools/protect.py --method patch-embedding)')
    ciphers = block_ciphers(protection)
    if ciphers:
        raise ValueError(
            f'{what}: cannot change the key of {", ".join(ciphers)} without retraining: a '
            "CNN's convolutions read windows that cross the cipher's blocks, so no change of "
            'weights makes images encrypted with the new key look like those the model '
            'learned; only channel permutations rekey exactly')


def rekey_permutations(model: nn.Module, new_key: KeySpec,
                       input_size: Optional[Tuple[int, int]] = None,
                       atol: float = DEFAULT_ATOL) -> Rekeyed:
    """Transform a permutation-protected model's weights from its key to ``new_key``.

    Args:
        model: the protected segmentor, built with its (old) key and loaded;
            left unchanged.
        new_key: the new key or its source.
        input_size: ``(H, W)`` of the random input (see :func:`~.absorb.absorb_permutations`).
        atol: the largest output difference accepted.

    Returns:
        Rekeyed: the new ``state_dict`` (to load into the model built with the new key).

    Raises:
        ValueError: the model has a block cipher or no permutation point, the
            new key is the old one, or the check finds a difference above ``atol``.
        PointRefused: a point whose permutation cannot be moved exactly.
    """
    protection = Protection.of(model)
    refuse_block_ciphers(protection, 'rekey')
    points = protection.permutations
    if not points:
        raise ValueError('rekey: the model has no channel-permutation points to rekey')
    secret = resolve_key(new_key, 'rekey')
    if any(part.correct_key == secret for part in points):
        raise ValueError('rekey: the new key is the key the model already has')
    names = [part.purpose for part in points]
    inputs = probe_input(model, input_size, seed=0)
    with protection.applied('correct'):
        hooks = {id(part.index): (part.purpose,
                                  channel_permutation_index(secret, part.purpose,
                                                            part.num_channels), part.index)
                 for part in points}
        changes = transformed_weights(model, hooks, inputs, names)
        rekeyed = copy.deepcopy(model)
        apply_weights(rekeyed, changes)
        with Protection.of(rekeyed).applied(secret):
            difference = check_same_outputs(model, rekeyed, probe_input(model, input_size, 1, 2),
                                            names, atol)
    state_dict = {k: v.detach().clone() for k, v in rekeyed.state_dict().items()}
    return Rekeyed(state_dict, names, sorted(changes), difference)
