"""Weight matching: undo keyed channel permutations with a public reference model.

A model protected *after training* (:mod:`mmseg_keyprotect.posthoc`) stores a keyed
rearrangement of its trained weights: the consumers of each point hold
``W[:, alpha]``, the producers of a permuted residual stream ``W[alpha]``, their norms
``gamma[alpha]``. If the model was fine-tuned from public pretrained weights, an attacker
who holds those (the *reference*) can put every stored tensor back in the reference's
channel order by a linear assignment per axis (Hungarian algorithm on the distances
between slices), without the key and without data. How much this recovers depends on how
far fine-tuning moved the weights from the reference; a model trained from scratch or
from a private initialisation gives the attacker no reference.

In the attack suite (``tools/attack.py run``) this is the ``weight_matching`` attack:
:func:`matched_init` aligns the stolen checkpoint to the public one named by the attack
config's ``victim['reference']``, the result is evaluated as it is (``matched_mIoU``), then
fine-tuned on the attacker's data with the budget (``mIoU``).

Example:
    >>> aligned = align_to_reference(stolen_state_dict, public_state_dict)  # doctest: +SKIP
    >>> model.load_state_dict(aligned)  # doctest: +SKIP
"""
from __future__ import annotations

from typing import Dict, Mapping

import torch
from mmengine.runner import CheckpointLoader
from scipy.optimize import linear_sum_assignment
from torch import Tensor

from ..checkpoint import is_sealed

__all__ = ['match_channels', 'align_to_reference', 'matched_init', 'REFERENCE_PREFIXES']

#: Prefixes a public reference may lack: a backbone's pretrained weights name its tensors
#: without the segmentor's ``backbone.``.
REFERENCE_PREFIXES = ('', 'backbone.')


def match_channels(stored: Tensor, reference: Tensor, dim: int) -> Tensor:
    """The index ``p`` with ``stored.select(dim, i)`` closest to ``reference.select(dim, p[i])``.

    A minimum-cost assignment of the slices along ``dim``, so ``p`` is a permutation; for
    ``stored = reference.index_select(dim, alpha)`` it is ``alpha``. Slices are compared by
    their sorted values (squared Euclidean distance), which the permutations of the other
    axes do not change, so a tensor permuted on both axes is matched one axis at a time.
    """
    n = stored.shape[dim]
    a = stored.detach().double().movedim(dim, 0).reshape(n, -1).sort(dim=1).values
    b = reference.detach().double().movedim(dim, 0).reshape(n, -1).sort(dim=1).values
    cost = torch.cdist(a, b).pow(2).numpy()
    rows, cols = linear_sum_assignment(cost)
    index = torch.empty(n, dtype=torch.long)
    index[torch.from_numpy(rows)] = torch.from_numpy(cols)
    return index


def align_to_reference(stored: Mapping[str, Tensor],
                       reference: Mapping[str, Tensor]) -> Dict[str, Tensor]:
    """Every floating-point tensor of ``stored`` put back in the reference's channel order.

    Each tensor is re-ordered along its first and (for weights) second axis by
    :func:`match_channels` against the reference tensor of the same name; tensors the
    reference lacks, or of another shape, are kept as stored.

    Returns:
        dict: a ``state_dict`` to load into the unprotected model.
    """
    aligned: Dict[str, Tensor] = {}
    for name, tensor in stored.items():
        ref = reference.get(name)
        if ref is None or ref.shape != tensor.shape or not tensor.is_floating_point():
            aligned[name] = tensor
            continue
        out = tensor
        for dim in range(min(tensor.dim(), 2)):
            if tensor.shape[dim] > 1:
                index = match_channels(out, ref, dim)
                out = out.index_select(dim, torch.argsort(index))
        aligned[name] = out
    return aligned


def _state_dict(path: str) -> Dict[str, Tensor]:
    """The tensors of a checkpoint file (its ``state_dict``, ``module.`` stripped)."""
    loaded = CheckpointLoader.load_checkpoint(str(path), map_location='cpu')
    state = loaded.get('state_dict', loaded) if isinstance(loaded, Mapping) else loaded
    return {name[len('module.'):] if name.startswith('module.') else name: tensor
            for name, tensor in state.items() if isinstance(tensor, Tensor)}


def matched_init(checkpoint: str, reference: str) -> Dict[str, Tensor]:
    """The stolen ``checkpoint``'s weights put back in the order of a public ``reference``.

    Args:
        checkpoint: the stolen checkpoint (weights stored in clear).
        reference: the public checkpoint the victim was fine-tuned from: a whole
            segmentor, or a backbone's pretrained weights (names without ``backbone.``).

    Returns:
        dict: a ``state_dict`` for the unprotected model.

    Raises:
        ValueError: the stolen weights are sealed, or the reference shares no
            tensor with them.
    """
    stolen = _state_dict(checkpoint)
    if is_sealed(stolen):
        raise ValueError(f'{checkpoint}: its weights are sealed (AES-GCM ciphertext), so there is '
                         'nothing to match; weight matching needs the stored weights in clear '
                         '(a checkpoint written without encrypt_weights)')
    public = _state_dict(reference)
    for prefix in REFERENCE_PREFIXES:
        named = {prefix + name: tensor for name, tensor in public.items()}
        if set(named) & set(stolen):
            return align_to_reference(stolen, named)
    raise ValueError(f'{reference}: shares no tensor name with {checkpoint} (tried the '
                     f'prefixes {list(REFERENCE_PREFIXES)}): not the reference of this model')
