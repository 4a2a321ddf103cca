"""Test and validation loops that evaluate a protected model under key conditions.

Set in a config, they make mmseg's own ``tools/test.py`` (and ``mim test
mmseg``) report the model under the correct key, plain and N incorrect keys::

    test_cfg = dict(type='KeyConditionTestLoop', incorrect=100, seed=0)
    val_cfg = dict(type='KeyConditionValLoop')  # correct-key mIoU for save_best

One pass over the data serves every condition. Each batch is loaded once and
then evaluated per condition, each condition with its own copy of the
evaluator:

* block ciphers in the pipeline are switched to *plain* for loading, and each
  condition's cipher is applied to the loaded (decoded, resized) images in the
  main process — the decode/augment work is done once per image;
* for permutations inside the model, :class:`KeyIndependentPrefix` computes the
  network up to the first keyed point once per batch and replays it for the
  other conditions. If that prefix is not a pure function of the batch (a
  module in train mode, random numbers drawn, forward hooks), the loop logs why
  and runs the whole network once per condition instead.

Incorrect keys are drawn so that the tables they derive (permutation, mask,
lookup) differ from the correct key's and from each other
(:func:`~mmseg_keyprotect.protection.conditions.draw_incorrect_keys`); the JSON
report counts the rejected duplicates. An evaluator with mmseg's pooled
``IoUMetric`` also gets paper 2's per-image mean IoU
(:class:`~mmseg_keyprotect.evaluation.metrics.PerImageIoUMetric`, ``mIoU_per_image``).

If a keyed transform is followed by anything but packing, each condition gets
its own pass over the data instead (same numbers, slower). Dataloader workers
are restarted whenever the pipeline's condition changes, so persistent workers
see it, and everything is restored afterwards.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional

import torch
from mmengine.dist import is_main_process
from mmengine.logging import print_log
from mmengine.runner import TestLoop, ValLoop
from mmseg.registry import LOOPS
from torch.utils.data import DataLoader

from ..engine.hooks import register_protection_hook
from ..protection import KeyCondition, Protection
from .metrics import add_per_image_miou
from .reports import flatten, markdown_table, summarize, write_report
from .strategies import ConditionEvaluation

__all__ = ['KeyConditionTestLoop', 'KeyConditionValLoop']


def _size_lazy_permutations(model, dataloader: DataLoader, protection: Protection) -> None:
    """Run one batch under the correct key if a permutation does not know its channel count yet.

    A lazily sized permutation derives its index on its first forward
    (:attr:`Protection.unsized_points`); the incorrect keys can only be compared
    by their permutations after it.
    """
    if not protection.unsized_points:
        return
    data_batch = next(iter(dataloader), None)
    if data_batch is not None:
        model.eval()
        with torch.no_grad(), Protection.of(model).applied('correct'):
            model.test_step(data_batch)


class _IncorrectKeys:
    """The conditions of a loop; incorrect keys drawn once, against the components in play."""

    def __init__(self, correct: bool, plain: bool, incorrect: int, seed: int) -> None:
        if isinstance(incorrect, bool) or not isinstance(incorrect, int) or incorrect < 0:
            raise ValueError(f'incorrect must be a non-negative int, got {incorrect!r}')
        if not (correct or plain or incorrect):
            raise ValueError('no key condition selected: enable correct, plain or incorrect > 0')
        self.correct, self.plain, self.incorrect, self.seed = correct, plain, incorrect, seed
        self.rejected = 0
        self._conditions: Optional[List[KeyCondition]] = None

    def conditions(self, model, dataloader: DataLoader) -> List[KeyCondition]:
        """correct, plain, then incorrect keys whose derived tables are all distinct."""
        if self._conditions is None:
            protection = Protection.of(model, dataloader)
            if self.incorrect:
                _size_lazy_permutations(model, dataloader, protection)
            self._conditions, self.rejected = protection.conditions(
                self.correct, self.plain, self.incorrect, self.seed)
        return self._conditions


@LOOPS.register_module()
class KeyConditionTestLoop(TestLoop):
    """Test loop that reports correct, plain and N incorrect keys.

    Writes ``key_conditions.json`` and ``key_conditions.md`` to the work_dir and
    logs the table. A model without any keyed component (an unprotected
    baseline) is evaluated once, as ``correct``. Metrics returned to the hooks are named
    ``correct/mIoU``, ``plain/mIoU``, ``incorrect/mIoU_mean`` (``_std``,
    ``_min``, ``_max``) and likewise for the evaluator's other metrics.
    Registers a :class:`~mmseg_keyprotect.engine.hooks.KeyProtectionHook` on
    the runner (block alignment check, checkpoint protection check). The JSON
    report also holds ``incorrect_rejected_duplicates`` (drawn keys whose tables
    equalled another's) and ``prefix_replay_fallback`` (why the shared prefix
    was not used, or null).

    Args:
        runner, dataloader, evaluator, fp16: as for mmengine's ``TestLoop``.
        correct (bool): evaluate the correct key. Defaults to True.
        plain (bool): evaluate plain (no protection). Defaults to True.
        incorrect (int): number of random incorrect keys. Defaults to 100.
        seed (int): seed the incorrect keys are drawn from. Defaults to 0.
        share_prefix (bool): reuse the key-independent part of the network
            across conditions (it falls back to one full pass per condition,
            and logs why, where that would not be exact). Defaults to True.
        out_name (str): file name stem of the JSON/markdown reports.
        per_image (bool): add paper 2's per-image mean IoU
            (``PerImageIoUMetric``, ``mIoU_per_image``) beside an ``IoUMetric``
            of the evaluator. Defaults to True.
    """

    def __init__(self, runner, dataloader, evaluator, fp16: bool = False,
                 correct: bool = True, plain: bool = True, incorrect: int = 100,
                 seed: int = 0, share_prefix: bool = True,
                 out_name: str = 'key_conditions', per_image: bool = True) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        register_protection_hook(runner)
        self.keys = _IncorrectKeys(correct, plain, incorrect, seed)
        self.share_prefix = share_prefix
        self.out_name = out_name
        if per_image:
            add_per_image_miou(self.evaluator)
        self.summary: Optional[Dict[str, Dict[str, Any]]] = None
        self.prefix_fallback: Optional[str] = None
        #: the last report (what ``key_conditions.json`` holds), on every rank
        self.report: Optional[Dict[str, Any]] = None

    def run(self) -> dict:
        """Evaluate every condition, report, and return the flat metrics."""
        self.runner.call_hook('before_test')
        self.runner.call_hook('before_test_epoch')
        evaluation = ConditionEvaluation(self.runner, self.dataloader, self.evaluator,
                                         self.keys.conditions(self.runner.model, self.dataloader),
                                         self.fp16, self.share_prefix)
        results = evaluation.run('test')
        self.prefix_fallback = evaluation.prefix_fallback
        self.summary = summarize(results)
        table = markdown_table(self.summary)
        print_log(f'Key conditions:\n{table}', logger='current')
        self.report = self._report(results)
        if is_main_process():
            json_path, _ = write_report(self.runner.work_dir, self.out_name, self.report, table)
            print_log(f'Key-condition results written to {json_path}', logger='current')
        metrics = flatten(self.summary)
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics

    def _report(self, results: Dict[str, Dict[str, float]]) -> Dict[str, Any]:
        return {
            # the same non-secret descriptor KeyProtectionHook stores in checkpoints
            'protection': Protection.of(self.runner.model, self.dataloader).describe(),
            'dataset_size': len(self.dataloader.dataset),
            'incorrect_seed': self.keys.seed,
            # incorrect keys drawn and thrown away: their tables equalled the correct
            # key's or an earlier incorrect key's (conditions.draw_incorrect_keys)
            'incorrect_rejected_duplicates': self.keys.rejected,
            'prefix_replay_fallback': self.prefix_fallback,
            'summary': self.summary,
            'per_condition': results,
        }


@LOOPS.register_module()
class KeyConditionValLoop(ValLoop):
    """Validation loop reporting the correct key (and optionally plain / incorrect).

    The correct-key metrics keep their plain names (``mIoU``...), so mmseg's
    ``CheckpointHook(save_best='mIoU')`` keeps the best correct-key checkpoint;
    other conditions are reported as ``plain/mIoU`` and ``incorrect/mIoU_mean``.
    Registers a :class:`~mmseg_keyprotect.engine.hooks.KeyProtectionHook` on
    the runner (block alignment check, protection descriptor in checkpoints).

    Args:
        runner, dataloader, evaluator, fp16: as for mmengine's ``ValLoop``.
        plain (bool): also report plain. Defaults to False.
        incorrect (int): also report this many incorrect keys. Defaults to 0.
        seed (int): seed of the incorrect keys. Defaults to 0.
        per_image (bool): add the per-image mean IoU beside an ``IoUMetric``.
            Defaults to True.
    """

    def __init__(self, runner, dataloader, evaluator, fp16: bool = False,
                 plain: bool = False, incorrect: int = 0, seed: int = 0,
                 per_image: bool = True) -> None:
        super().__init__(runner, dataloader, evaluator, fp16)
        register_protection_hook(runner)
        self.keys = _IncorrectKeys(True, plain, incorrect, seed)
        if per_image:
            add_per_image_miou(self.evaluator)

    def run(self) -> dict:
        """Evaluate; return correct-key metrics plus prefixed other conditions."""
        self.runner.call_hook('before_val')
        self.runner.call_hook('before_val_epoch')
        results = ConditionEvaluation(self.runner, self.dataloader, self.evaluator,
                                      self.keys.conditions(self.runner.model, self.dataloader),
                                      self.fp16).run('val')
        summary = summarize(results)
        metrics = dict(summary.pop('correct'))
        metrics.update(flatten(summary))
        self.runner.call_hook('after_val_epoch', metrics=metrics)
        self.runner.call_hook('after_val')
        return metrics
