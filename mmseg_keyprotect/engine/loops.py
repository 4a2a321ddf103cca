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
(:func:`~mmseg_keyprotect.engine.conditions.draw_incorrect_keys`); the JSON
report counts the rejected duplicates. An evaluator with mmseg's pooled
``IoUMetric`` also gets paper 2's per-image mean IoU
(:class:`~mmseg_keyprotect.engine.metrics.PerImageIoUMetric`, ``mIoU_per_image``).

If a keyed transform is followed by anything but packing, each condition gets
its own pass over the data instead (same numbers, slower). Dataloader workers
are restarted whenever the pipeline's condition changes, so persistent workers
see it, and everything is restored afterwards.
"""
from __future__ import annotations

import contextlib
import copy
import json
import logging
import statistics
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dist import is_main_process
from mmengine.logging import MMLogger, print_log
from mmengine.runner import TestLoop, ValLoop
from mmengine.runner.amp import autocast
from mmseg.registry import LOOPS
from torch.utils.data import DataLoader

from ..keyed import KeyedComponent
from ..models.permutation import ChannelPermutation
from ..transforms import BlockCipher
from .conditions import (KeyCondition, draw_incorrect_keys, find_keyed_components, key_condition,
                         walk_containers)
from .hooks import register_protection_hook
from .metrics import add_per_image_miou, use_fast_iou
from .postprocess import batched_postprocess
from .prefix_cache import KeyIndependentPrefix
from .protection import describe_protection

__all__ = ['KeyConditionTestLoop', 'KeyConditionValLoop', 'ConditionEvaluation',
           'restart_workers', 'summarize', 'markdown_table']

# Transforms that may follow a block cipher without touching ``results['img']``.
_IMAGE_SAFE_AFTER_CIPHER = ('PackSegInputs', 'LoadAnnotations')


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


def _pipelines_with_ciphers(dataloader: DataLoader) -> List[Any]:
    """The pipelines (``Compose`` and the like) of the dataset that hold keyed transforms."""
    found = []
    for obj in walk_containers(dataloader):
        transforms = getattr(obj, '__dict__', {}).get('transforms')
        if isinstance(transforms, list) and any(isinstance(t, KeyedComponent)
                                                for t in transforms):
            found.append(obj)
    return found


def _ciphers_applicable_after_loading(dataloader: DataLoader) -> bool:
    """True if every keyed transform is a block cipher followed only by packing."""
    for pipeline in _pipelines_with_ciphers(dataloader):
        transforms = pipeline.transforms
        first = next(i for i, t in enumerate(transforms) if isinstance(t, KeyedComponent))
        for t in transforms[first:]:
            if isinstance(t, KeyedComponent):
                if not isinstance(t, BlockCipher):
                    return False
            elif type(t).__name__ not in _IMAGE_SAFE_AFTER_CIPHER:
                return False
    return True


def _encrypt_inputs(data_batch: Dict[str, Any], ciphers: Sequence[BlockCipher],
                    condition: KeyCondition) -> Dict[str, Any]:
    """Apply ``condition``'s ciphers to packed (C, H, W) inputs loaded in plain."""
    inputs = []
    for img in data_batch['inputs']:
        array = img.numpy().transpose(1, 2, 0)
        for cipher in ciphers:
            key = condition.key_for(cipher)
            if key is not None:
                array = cipher.encrypt(array, key)
        inputs.append(torch.from_numpy(np.ascontiguousarray(array.transpose(2, 0, 1))))
    return {**data_batch, 'inputs': inputs}


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


def _as_float(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer, torch.Tensor)):
        return float(value)
    return value


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
        data_side = find_keyed_components(self.dataloader)
        if len(self.conditions) > 1 and not data_side and not find_keyed_components(model):
            print_log('no keyed component in the model or its test data: every key condition '
                      'is the unprotected model, so it is evaluated once', logger='current',
                      level=logging.WARNING)
            self.conditions = self.conditions[:1]
        evaluators = [copy.deepcopy(self.evaluator) for _ in self.conditions]
        if len(self.conditions) > 1:
            use_fast_iou(m for e in evaluators for m in e.metrics)
        try:
            if not data_side or _ciphers_applicable_after_loading(self.dataloader):
                self._single_pass(stage, model, evaluators, data_side)
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
            results[condition.label] = {k: _as_float(v) for k, v in metrics.items()}
        return results

    def _step(self, model, data_batch: Dict[str, Any], stage: str) -> list:
        with autocast(enabled=self.fp16):
            return model.val_step(data_batch) if stage == 'val' else model.test_step(data_batch)

    @torch.no_grad()
    def _single_pass(self, stage: str, model, evaluators: list, data_side: list) -> None:
        ciphers = [c for c in data_side if isinstance(c, BlockCipher)]
        use_prefix = self.share_prefix and not data_side and len(self.conditions) > 1
        batched = batched_postprocess(model) if len(self.conditions) > 1 \
            else contextlib.nullcontext()
        with key_condition(KeyCondition.plain(), data_side), batched:
            if data_side:
                restart_workers(self.dataloader)
            for idx, data_batch in enumerate(self.dataloader):
                self.runner.call_hook(f'before_{stage}_iter', batch_idx=idx,
                                      data_batch=data_batch)
                prefix = KeyIndependentPrefix(model) if use_prefix else None
                first_outputs = None
                for i, condition in enumerate(self.conditions):
                    batch = _encrypt_inputs(data_batch, ciphers, condition) if ciphers \
                        else data_batch
                    share = (prefix.record() if i == 0 else prefix.replay()) if prefix \
                        else contextlib.nullcontext()
                    with key_condition(condition, model), share:
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
            with key_condition(condition, model, data_side):
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


def summarize(results: Dict[str, Dict[str, float]]) -> Dict[str, Dict[str, Any]]:
    """Per-condition metrics; incorrect keys reduced to mean, std, min, max.

    Returns:
        dict: ``{'correct': {...}, 'plain': {...}, 'incorrect': {'mean': {...},
        'std': {...}, 'min': {...}, 'max': {...}, 'num_keys': N}}`` (only the
        conditions that were evaluated).
    """
    summary: Dict[str, Dict[str, Any]] = {}
    for label in ('correct', 'plain'):
        if label in results:
            summary[label] = dict(results[label])
    incorrect = [m for label, m in results.items() if label.startswith('incorrect/')]
    if incorrect:
        names = [k for k, v in incorrect[0].items() if isinstance(v, float)]
        values = {k: [m[k] for m in incorrect] for k in names}
        summary['incorrect'] = {
            'mean': {k: statistics.fmean(v) for k, v in values.items()},
            'std': {k: statistics.pstdev(v) for k, v in values.items()},
            'min': {k: min(v) for k, v in values.items()},
            'max': {k: max(v) for k, v in values.items()},
            'num_keys': len(incorrect),
        }
    return summary


def markdown_table(summary: Dict[str, Dict[str, Any]]) -> str:
    """A markdown table: one row per condition, one column per metric."""
    first = summary.get('correct') or summary.get('plain') or summary['incorrect']['mean']
    names = [k for k, v in first.items() if isinstance(v, float)]
    lines = ['| condition | ' + ' | '.join(names) + ' |',
             '|---|' + '---:|' * len(names)]
    for label in ('correct', 'plain'):
        if label in summary:
            lines.append(f'| {label} | ' + ' | '.join(f'{summary[label][k]:.2f}'
                                                     for k in names) + ' |')
    if 'incorrect' in summary:
        inc = summary['incorrect']
        cells = [f"{inc['mean'][k]:.2f} ± {inc['std'][k]:.2f} "
                 f"[{inc['min'][k]:.2f}, {inc['max'][k]:.2f}]" for k in names]
        lines.append(f"| incorrect (mean ± std [min, max], {inc['num_keys']} keys) | "
                     + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _flatten(summary: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
    flat = {}
    for label in ('correct', 'plain'):
        for k, v in summary.get(label, {}).items():
            flat[f'{label}/{k}'] = v
    inc = summary.get('incorrect')
    if inc:
        for stat in ('mean', 'std', 'min', 'max'):
            for k, v in inc[stat].items():
                flat[f'incorrect/{k}_{stat}'] = v
    return flat


def _size_lazy_permutations(model, dataloader: DataLoader,
                            components: Sequence[KeyedComponent]) -> None:
    """Run one batch under the correct key if a permutation does not know its channel count yet.

    A lazily sized :class:`ChannelPermutation` derives its index on its first
    forward; the incorrect keys can only be compared by their permutations after it.
    """
    if not any(isinstance(c, ChannelPermutation) and c.num_channels is None
               for c in components):
        return
    data_batch = next(iter(dataloader), None)
    if data_batch is not None:
        model.eval()
        with torch.no_grad(), key_condition(KeyCondition.correct(), model):
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
            components = find_keyed_components(model, dataloader)
            if self.incorrect:
                _size_lazy_permutations(model, dataloader, components)
            keys, self.rejected = draw_incorrect_keys(self.incorrect, self.seed, components)
            conditions = [KeyCondition.correct()] if self.correct else []
            if self.plain:
                conditions.append(KeyCondition.plain())
            conditions += [KeyCondition.incorrect(k, i) for i, k in enumerate(keys)]
            self._conditions = conditions
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
        self.seed = seed
        self.share_prefix = share_prefix
        self.out_name = out_name
        if per_image:
            add_per_image_miou(self.evaluator)
        self.summary: Optional[Dict[str, Dict[str, Any]]] = None
        self.prefix_fallback: Optional[str] = None

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
        if is_main_process():
            self._write_reports(results, table)
        metrics = _flatten(self.summary)
        self.runner.call_hook('after_test_epoch', metrics=metrics)
        self.runner.call_hook('after_test')
        return metrics

    def _write_reports(self, results: Dict[str, Dict[str, float]], table: str) -> None:
        out_dir = Path(self.runner.work_dir)
        report = {
            # the same non-secret descriptor KeyProtectionHook stores in checkpoints
            'protection': describe_protection(self.runner.model, self.dataloader),
            'dataset_size': len(self.dataloader.dataset),
            'incorrect_seed': self.seed,
            # incorrect keys drawn and thrown away: their tables equalled the correct
            # key's or an earlier incorrect key's (conditions.draw_incorrect_keys)
            'incorrect_rejected_duplicates': self.keys.rejected,
            'prefix_replay_fallback': self.prefix_fallback,
            'summary': self.summary,
            'per_condition': results,
        }
        json_path = out_dir / f'{self.out_name}.json'
        json_path.write_text(json.dumps(report, indent=2))
        (out_dir / f'{self.out_name}.md').write_text(table + '\n')
        print_log(f'Key-condition results written to {json_path}', logger='current')


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
        metrics.update(_flatten(summary))
        self.runner.call_hook('after_val_epoch', metrics=metrics)
        self.runner.call_hook('after_val')
        return metrics
