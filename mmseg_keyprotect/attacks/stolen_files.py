"""What a thief can take from a run's files besides the weights: optimizer state, and an audit.

Two tools for the threat model "every file a protected run writes is stolen":

* :func:`momentum_init` turns the SGD momentum buffers of an ``iter_*.pth``
  into initial weights for the attacks of :mod:`~mmseg_keyprotect.attacks`
  (``AttackSpec(init='momentum')``). Near the end of training a momentum
  buffer is dominated by weight decay, ``m ~ wd * w / (1 - mu)``, so in clear
  it holds each weight tensor up to one scale: the attack rescales every
  convolution's buffer to the spread of a fresh initialisation and resets
  everything else (normalisation layers, biases). Against sealed checkpoints
  the buffers are random bits and the attack starts from noise.
* :func:`correlation_audit` is the owner's check that no file of a run holds
  the weights: the Spearman rank correlation of every tensor of every
  ``.pth`` in a work_dir against the trained weights (and their momentum)
  of the same size.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Tuple

import numpy as np
import torch
from mmengine.runner import CheckpointLoader
from mmseg.registry import MODELS
from scipy.stats import rankdata
from torch import Tensor

from ..checkpoint import META_KEY, open_checkpoint, tensors_with_paths
from ..protection import Protection

__all__ = ['momentum_init', 'correlation_audit', 'owner_reference', 'rank_correlation',
           'tensors_of']


def tensors_of(node: Any) -> List[Tuple[str, Tensor]]:
    """Every tensor inside nested dicts/lists/tuples, with a ``/``-joined path."""
    return [('/' + '/'.join(map(str, path)), tensor)
            for path, tensor in tensors_with_paths(node)]


def momentum_init(model_cfg: Mapping[str, Any], checkpoint: str) -> Dict[str, Tensor]:
    """Initial weights made from the momentum buffers of a stolen checkpoint.

    Args:
        model_cfg: the attacker's (unprotected) model config; its freshly
            initialised weights give the scale of each tensor and every value
            the buffers do not replace.
        checkpoint: an ``iter_*.pth`` written with its optimizer state.

    Returns:
        dict: a ``state_dict`` for the model.

    Raises:
        ValueError: if the checkpoint holds no SGD momentum buffers.
    """
    model = MODELS.build(model_cfg)
    model.init_weights()
    names = [name for name, _ in model.named_parameters()]
    state = model.state_dict()
    stolen = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    buffers = {int(index): entry['momentum_buffer']
               for index, entry in (stolen.get('optimizer') or {}).get('state', {}).items()
               if isinstance(entry, Mapping) and isinstance(entry.get('momentum_buffer'), Tensor)}
    if not buffers:
        raise ValueError(f'{checkpoint} holds no SGD momentum buffers (optimizer state): use an '
                         'iter_*.pth written by a run with an SGD optimizer')
    for index, buffer in buffers.items():
        name = names[index] if index < len(names) else None
        if name is None or buffer.dim() < 2 or buffer.shape != state[name].shape:
            continue  # normalisation layers and biases keep their fresh initialisation
        state[name] = _rescaled(buffer, state[name])
    return state


def owner_reference(config: str, checkpoint: str) -> Dict[str, Tensor]:
    """The owner's view of a checkpoint, in clear: trained weights and optimizer state.

    Builds the model with its key (mmseg's ``init_model``, which opens the
    sealed ``state_dict``) and opens the sealed optimizer state with the same key.

    Args:
        config: the protected config (its key source must be readable).
        checkpoint: an ``iter_*.pth`` of the run.

    Returns:
        dict: ``model/NAME``, ``optimizer/PATH`` and ``param/INDEX`` (the
        optimizer's parameter order) -> tensor in clear.
    """
    from mmseg.apis import init_model

    model = init_model(config, checkpoint, device='cpu')
    reference = {f'model/{k}': v for k, v in model.state_dict().items()}
    stolen = CheckpointLoader.load_checkpoint(checkpoint, map_location='cpu')
    encryption = Protection.of(model).weight_encryption
    if encryption is not None:
        open_checkpoint(stolen, encryption.key, stolen['meta'][META_KEY])
    reference.update({f'optimizer{path}': t for path, t in tensors_of(stolen.get('optimizer'))})
    reference.update({f'param/{i}': p.detach() for i, p in enumerate(model.parameters())})
    return reference


def rank_correlation(a: Tensor, b: Tensor) -> float:
    """|Spearman r| of two same-sized tensors over the positions where both are finite.

    Ranks with ``scipy.stats.rankdata`` and correlates them (``spearmanr``'s
    ``nan_policy='omit'`` goes through masked arrays and is far slower).
    """
    x = a.detach().reshape(-1).double().cpu().numpy()
    y = b.detach().reshape(-1).double().cpu().numpy()
    keep = np.isfinite(x) & np.isfinite(y)
    if keep.sum() < 3:
        return 0.0
    r = np.corrcoef(rankdata(x[keep]), rankdata(y[keep]))[0, 1]
    return abs(float(np.nan_to_num(r)))


def _counterparts(path: str) -> List[str]:
    """The reference names a checkpoint tensor at ``path`` would match if it were in clear."""
    parts = path.strip('/').split('/')
    if parts[0] == 'state_dict' and len(parts) == 2:
        return [f'model/{parts[1]}']
    if parts[0] == 'ema_state_dict' and len(parts) == 2 and parts[1].startswith('module.'):
        return [f'model/{parts[1][len("module."):]}']
    if parts[0] == 'optimizer' and len(parts) == 4 and parts[1] == 'state':
        return [f'optimizer/state/{parts[2]}/{parts[3]}', f'param/{parts[2]}']
    return []


def _rescaled(buffer: Tensor, fresh: Tensor) -> Tensor:
    """``buffer`` with outliers clipped, rescaled to the spread of ``fresh``.

    A robust scale (median absolute deviation) and clipping at 5 of it, so
    that a few huge values (or random bits read as floats) do not decide the
    scale.
    """
    values = torch.nan_to_num(buffer.double(), nan=0.0, posinf=0.0, neginf=0.0)
    centre = values.median()
    spread = float((values - centre).abs().median()) * 1.4826
    if not spread > 0 or not np.isfinite(spread):
        return fresh.clone()
    values = ((values - centre) / spread).clamp(-5, 5)
    return (values / values.std() * fresh.double().std()).to(fresh.dtype)


def correlation_audit(work_dir: str, reference: Mapping[str, Tensor],
                      min_size: int = 1024) -> List[Dict[str, Any]]:
    """|Spearman r| of every tensor of every ``.pth`` against its counterpart in clear.

    A tensor of the ``state_dict`` (or of an EMA copy) is compared with the
    trained weight of the same name; an optimizer buffer with the same buffer
    in clear and with the weight of its parameter.

    Args:
        work_dir: a run's folder; every ``*.pth`` under it is read (safely).
        reference: :func:`owner_reference` of the run.
        min_size: tensors with fewer values are skipped (their r is noise).

    Returns:
        list[dict]: one row per (file, tensor, counterpart): ``file``,
        ``tensor``, ``against``, ``n`` and ``abs_r``.
    """
    rows = []
    for file in sorted(Path(work_dir).rglob('*.pth')):
        checkpoint = CheckpointLoader.load_checkpoint(str(file), map_location='cpu')
        for path, value in tensors_of({k: v for k, v in checkpoint.items() if k != 'meta'}):
            if not value.is_floating_point() or value.numel() < min_size:
                continue
            for name in _counterparts(path):
                twin = reference.get(name)
                if twin is None or twin.numel() != value.numel():
                    continue
                rows.append(dict(file=str(file.relative_to(work_dir)), tensor=path,
                                 against=name, n=int(value.numel()),
                                 abs_r=round(rank_correlation(value, twin), 4)))
    return rows
