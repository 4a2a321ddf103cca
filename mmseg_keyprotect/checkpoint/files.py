"""A run's checkpoint files: finding them, replacing one atomically, upgrading one in place."""
from __future__ import annotations

import glob
import os
import re
import secrets
from pathlib import Path
from typing import Any, BinaryIO, Callable, Union

import torch

from ..keys import SecretKey
from .safe_load import safe_torch_load
from .tree import upgrade_checkpoint

__all__ = ['find_checkpoint', 'write_atomically', 'save_atomically', 'upgrade_file']

#: File patterns of the checkpoints mmengine's ``CheckpointHook`` writes.
_CHECKPOINT_PATTERNS = {'best': 'best_*_iter_*.pth', 'last': 'iter_*.pth'}


def find_checkpoint(work_dir: Union[str, 'os.PathLike[str]'], which: str = 'best') -> str:
    """The best (``save_best``) or the last ``iter_*.pth`` checkpoint of a work_dir.

    Args:
        work_dir: the run's work_dir.
        which: ``'best'`` or ``'last'``; among several, the highest iteration.

    Raises:
        FileNotFoundError: naming the work_dir and the pattern.
    """
    if which not in _CHECKPOINT_PATTERNS:
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    pattern = _CHECKPOINT_PATTERNS[which]
    found = glob.glob(os.path.join(str(work_dir), pattern))
    if not found:
        raise FileNotFoundError(f'no {pattern} in {str(work_dir)!r}: train the model first')
    return max(found, key=lambda p: int(re.findall(r'\d+', os.path.basename(p))[-1]))


def write_atomically(path: Union[str, 'os.PathLike[str]'], write: Callable[[BinaryIO], Any]) -> None:
    """``write(file)`` into a new file next to ``path``, flushed, then renamed over ``path``.

    A crash leaves either the old file or the new one, never half of either.
    """
    path = Path(path)
    tmp = path.parent / f'.{path.name}.{secrets.token_hex(8)}.tmp'
    try:
        with open(tmp, 'xb') as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def save_atomically(checkpoint: Any, path: Union[str, 'os.PathLike[str]']) -> None:
    """``torch.save(checkpoint)`` over ``path`` atomically (:func:`write_atomically`)."""
    write_atomically(path, lambda f: torch.save(checkpoint, f))


def upgrade_file(path: Union[str, 'os.PathLike[str]'], key: SecretKey) -> bool:
    """Give a checkpoint file sealed before manifests existed its manifest, atomically in place.

    The run identity recorded is the file's ``meta['experiment_name']`` (the
    run that wrote it), so the files of one run share it.

    Returns:
        bool: False if the file already had a manifest (left untouched).

    Raises:
        EncryptedWeightsError: the file is not sealed with ``key`` or fails authentication.
    """
    checkpoint = safe_torch_load(str(path), 'cpu', str(path))
    run = str((checkpoint.get('meta') or {}).get('experiment_name') or Path(path).parent.name)
    if not upgrade_checkpoint(checkpoint, key, run):
        return False
    save_atomically(checkpoint, path)
    return True
