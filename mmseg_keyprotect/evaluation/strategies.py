"""Evaluation strategies: how one dataloader is evaluated under several key conditions.

:class:`ConditionEvaluation` picks one of two strategies:

* **single pass with replay**: each batch is loaded once and then evaluated per
  condition, each condition with its own copy of the evaluator. Block ciphers
  in the pipeline are switched to *plain* for loading, and each condition's
  cipher is applied to the loaded (decoded, resized) images in the main
  process; for permutations inside the model,
  :class:`~.prefix_cache.KeyIndependentPrefix` computes the network up to the
  first keyed point once per batch and replays it for the other conditions
  (falling back, and logging why, when that prefix is not a pure function of
  the batch);
* **one pass per condition**: when a keyed transform is followed by anything
  but packing (or is not a block cipher), each condition gets its own pass
  over the data (same numbers, slower).

Dataloader workers are restarted whenever the pipeline's condition changes,
so persistent workers see it, and every key is restored afterwards. All key
switching goes through :class:`~mmseg_keyprotect.protection.Protection`.
"""
from __future__ import annotations

import contextlib
import copy
import logging
from typing import Any, Dict, Iterator, Optional, Sequence

import torch
from mmengine.logging import MMLogger, print_log
from mmengine.runner.amp import autocast
from torch.utils.data import DataLoader

from ..protection import KeyCondition, Protection
from .reports import as_float
from .metrics import use_fast_iou
from .postprocess import batched_postprocess
from .prefix_cache import KeyIndependentPrefix

__all__ = ['ConditionEvaluation', 'restart_workers']


def restart_workers(dataloader: DataLoader) -> None:
    """Make the next ``iter(dataloader)`` start fresh workers with the current pipeline.

    Persistent workers keep the copy of the pipeline they were started with;
    shutting them down forces new ones that see the current key condition.
    """
    iterator = getattr(dataloader, '_iterator', None)
    if iterator is not None and hasattr(iterator, '_shutdown_workers'):
        iterator._shutdown_workers()
    if iterator is not None:
        dataloader._iterator = None


@contextlib.contextmanager
def _quiet_logger(enabled: bool) -> Iterator[None]:
    """Silence INFO logs (the per-class table of each incorrect key) when ``enabled``."""
    logger = MMLogger.get_current_instance()
    level = logger.level
    if enabled:
        logger.setLevel(logging.WARNING)
    try:
        yield
    finally:
        logger.setLevel(level)


class ConditionEvaluation:
    """Evaluate a model on a dataloader under several key conditions in one pass.

    Args:
        runner: the mmengine runner (for the model and the hooks).
        dataloader: the dataloader.
        evaluator: the evaluator; each condition gets a deep copy.
        conditions: the conditions, in reporting order.
        fp16: run under autocast.
        share_prefix: reuse the key-independent part of the network across
            conditions (for permutations inside the model).
    """

    def __init__(self, runner, dataloader: DataLoader, evaluator, conditions:
                 Sequence[KeyCondition], fp16: bool = False, share_prefix: bool = True) -> None:
        self.runner = runner
        self.dataloader = dataloader
        self.evaluator = evaluator
        self.conditions = list(conditions)
        self.fp16 = fp16
        self.share_prefix = share_prefix
        #: why the shared prefix was not used (None: it was, or it was not asked for)
        self.prefix_fallback: Optional[str] = None

    def run(self, stage: str) -> Dict[str, Dict[str, float]]:
        """Evaluate; call the runner's ``{stage}`` iteration hooks for the first condition.

        Returns:
            dict: condition label -> metrics (plain floats).
        """
        model = self.runner.model
        model.eval()
        data = Protection.of(self.dataloader)
        data_side = data.parts
        if len(self.conditions) > 1 and not data_side and not Protection.of(model).parts:
            print_log('no keyed component in the model or its test data: every key condition '
                      'is the unprotected model, so it is evaluated once', logger='current',
                      level=logging.WARNING)
            self.conditions = self.conditions[:1]
        evaluators = [copy.deepcopy(self.evaluator) for _ in self.conditions]
        if len(self.conditions) > 1:
            use_fast_iou(m for e in evaluators for m in e.metrics)
        try:
            if not data_side or data.ciphers_replayable:
                self._single_pass(stage, model, evaluators, data)
            else:
                self._pass_per_condition(stage, model, evaluators, data_side)
        finally:
            if data_side:
                restart_workers(self.dataloader)  # workers must see the restored keys
        size = len(self.dataloader.dataset)
        results = {}
        for condition, evaluator in zip(self.conditions, evaluators):
            with _quiet_logger(condition.kind == 'incorrect'):
                metrics = evaluator.evaluate(size)
            results[condition.label] = {k: as_float(v) for k, v in metrics.items()}
        return results

    def _step(self, model, data_batch: Dict[str, Any], stage: str) -> list:
        with autocast(enabled=self.fp16):
            return model.val_step(data_batch) if stage == 'val' else model.test_step(data_batch)

    @torch.no_grad()
    def _single_pass(self, stage: str, model, evaluators: list, data: Protection) -> None:
        data_side = data.parts
        use_prefix = self.share_prefix and not data_side and len(self.conditions) > 1
        batched = batched_postprocess(model) if len(self.conditions) > 1 \
            else contextlib.nullcontext()
        with data.applied('plain'), batched:
            if data_side:
                restart_workers(self.dataloader)
            for idx, data_batch in enumerate(self.dataloader):
                self.runner.call_hook(f'before_{stage}_iter', batch_idx=idx,
                                      data_batch=data_batch)
                prefix = KeyIndependentPrefix(model) if use_prefix else None
                first_outputs = None
                for i, condition in enumerate(self.conditions):
                    batch = data.encrypt_batch(data_batch, condition)
                    share = (prefix.record() if i == 0 else prefix.replay()) if prefix \
                        else contextlib.nullcontext()
                    with Protection.of(model).applied(condition), share:
                        outputs = self._step(model, batch, stage)
                    if i == 0 and prefix is not None and prefix.unsafe_reason is not None:
                        self._fall_back(prefix.unsafe_reason)
                        use_prefix, prefix = False, None
                    evaluators[i].process(data_samples=outputs, data_batch=batch)
                    if i == 0:
                        first_outputs = [o.clone() for o in outputs] \
                            if len(self.conditions) > 1 else outputs
                self.runner.call_hook(f'after_{stage}_iter', batch_idx=idx,
                                      data_batch=data_batch, outputs=first_outputs)

    def _fall_back(self, reason: str) -> None:
        """Stop sharing the prefix for the rest of the evaluation, and say why."""
        self.prefix_fallback = reason
        print_log(f'key conditions: not replaying the key-independent prefix ({reason}); '
                  'falling back to one full forward pass per condition', logger='current',
                  level=logging.WARNING)

    @torch.no_grad()
    def _pass_per_condition(self, stage: str, model, evaluators: list, data_side: list) -> None:
        for i, condition in enumerate(self.conditions):
            with Protection.of(model, data_side).applied(condition):
                restart_workers(self.dataloader)
                for idx, data_batch in enumerate(self.dataloader):
                    if i == 0:
                        self.runner.call_hook(f'before_{stage}_iter', batch_idx=idx,
                                              data_batch=data_batch)
                    outputs = self._step(model, data_batch, stage)
                    evaluators[i].process(data_samples=outputs, data_batch=data_batch)
                    if i == 0:
                        self.runner.call_hook(f'after_{stage}_iter', batch_idx=idx,
                                              data_batch=data_batch, outputs=outputs)
