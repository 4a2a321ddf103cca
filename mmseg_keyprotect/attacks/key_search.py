"""Key search: try candidate keys on a few labelled images and keep the best.

The papers derive their permutations from small integer seeds; a key made with
:meth:`~mmseg_keyprotect.keys.SecretKey.from_seed` has only as much entropy as
the seed range. An attacker who holds the stolen model, its config and a few
labelled images tries seeds: each candidate key is switched into every keyed
component (model points and pipeline ciphers) with
:meth:`~mmseg_keyprotect.protection.Protection.applied`, the images are
segmented, and the candidate with the highest pixel accuracy wins. The
correct key stands out: every wrong key scores at the level of plain input.

The same measurement gives the search rate, from which the time to search a
256-bit key (``tools/keygen.py``) is extrapolated.
"""
from __future__ import annotations

import time
import warnings
from dataclasses import dataclass, field
from typing import Iterable, List, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.runner import Runner, load_checkpoint
from mmseg.registry import MODELS

from ..keys import SecretKey, WeakKeyWarning, replace_key_sources
from ..protection import Protection
from .config import subset_indices
from .runner import dataset_size

__all__ = ['KeySearchResult', 'search_seed_keys', 'pixel_accuracy', 'load_stolen_model',
           'few_images_loader']


@dataclass
class KeySearchResult:
    """Outcome of a key search.

    Attributes:
        best_seed: the seed whose key scored highest.
        best_score: its pixel accuracy (0..1).
        scores: ``(seed, score)`` for every candidate, in search order.
        seconds: time spent scoring candidates.
    """

    best_seed: int
    best_score: float
    scores: List[Tuple[int, float]] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def keys_per_second(self) -> float:
        return len(self.scores) / self.seconds if self.seconds else float('inf')

    def runner_up(self) -> float:
        """The best score of any seed other than ``best_seed`` (the margin of the search)."""
        rest = [score for seed, score in self.scores if seed != self.best_seed]
        return max(rest) if rest else float('nan')


def load_stolen_model(victim: Config, checkpoint: str) -> Tuple[torch.nn.Module, Config]:
    """Build the victim's model and dataloader config as the attacker can: no key.

    The config's key sources are replaced with a throw-away random key (the
    attacker does not have the owner's file or variable); the search switches
    every keyed component to its candidates.

    Returns:
        (model, cfg): the model in eval mode with the stolen weights, and the
        config with the throw-away key.
    """
    cfg = victim.copy()
    replace_key_sources(cfg, SecretKey.generate())
    model = MODELS.build(cfg.model)
    load_checkpoint(model, checkpoint, map_location='cpu', logger='silent')
    return model.eval(), cfg


@torch.no_grad()
def pixel_accuracy(model: torch.nn.Module, batches: Sequence[dict]) -> float:
    """Share of labelled pixels the model gets right on ``batches`` (mmseg data dicts)."""
    correct = total = 0
    for batch in batches:
        for sample in model.test_step(batch):
            pred = sample.pred_sem_seg.data.squeeze(0)
            gt = sample.gt_sem_seg.data.squeeze(0).to(pred.device)
            valid = gt != 255
            correct += int((pred[valid] == gt[valid]).sum())
            total += int(valid.sum())
    return correct / max(total, 1)


def search_seed_keys(model: torch.nn.Module, dataloader: Iterable, seeds: Iterable[int],
                     reload_data: bool = False) -> KeySearchResult:
    """Score the key of every seed in ``seeds`` and return the best.

    Args:
        model: the stolen protected model (keyed components present, key unknown).
        dataloader: the attacker's few labelled images (mmseg data dicts).
        seeds: candidate seeds, tried in order.
        reload_data: reload the data for every candidate (needed when keyed
            ciphers run in the dataloader's pipeline); otherwise the batches are
            loaded once and only the model's keyed components change.

    Returns:
        KeySearchResult: the best seed, its score and every candidate's score.
    """
    cached = None if reload_data else list(dataloader)
    protection = Protection.of(model, dataloader)
    scores: List[Tuple[int, float]] = []
    start = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', WeakKeyWarning)
        for seed in seeds:
            with protection.applied(SecretKey.from_seed(seed)):
                batches = list(dataloader) if reload_data else cached
                scores.append((int(seed), pixel_accuracy(model, batches)))
    seconds = time.perf_counter() - start
    best_seed, best_score = max(scores, key=lambda item: item[1])
    return KeySearchResult(best_seed, best_score, scores, seconds)


def few_images_loader(cfg: Config, count: int, seed: int = 0):
    """A dataloader over ``count`` fixed images of the training set, in this process."""
    loader = cfg.train_dataloader.copy()
    loader.dataset = cfg.train_dataloader.dataset.copy()
    loader.dataset.pipeline = cfg.test_dataloader.dataset.pipeline
    loader.dataset.indices = subset_indices(dataset_size(cfg), count / dataset_size(cfg), seed)
    loader.num_workers = 0
    loader.persistent_workers = False
    loader.sampler = dict(type='DefaultSampler', shuffle=False)
    return Runner.build_dataloader(loader)
