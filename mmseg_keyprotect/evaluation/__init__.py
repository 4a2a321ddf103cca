"""Evaluation under key conditions: strategies, metrics, reports and the loops.

The key conditions themselves (:class:`KeyCondition`: correct / plain /
incorrect, incorrect keys drawn distinct) belong to the protection
(:mod:`mmseg_keyprotect.protection.conditions`) and are re-exported here.

* :mod:`.strategies`: ``ConditionEvaluation`` (one pass with replay, or one
  pass per condition) and ``restart_workers``;
* :mod:`.metrics`: paper 2's per-image mean IoU (``PerImageIoUMetric``), a fast
  IoU for many conditions;
* :mod:`.reports`: summary, markdown table and ``write_report`` (JSON + markdown);
* :mod:`.loops`: ``KeyConditionTestLoop`` / ``KeyConditionValLoop`` (mmseg ``LOOPS``).

This ``__init__`` imports only the reports; the package's ``__init__`` imports
the loops and metrics to register them.
"""
from ..protection.conditions import (KeyCondition, condition_list, draw_incorrect_keys,
                                     make_conditions)
from .reports import flatten, markdown_table, models_table, summarize, write_report

__all__ = [
    'KeyCondition', 'condition_list', 'draw_incorrect_keys', 'make_conditions', 'flatten',
    'markdown_table', 'models_table', 'summarize', 'write_report'
]
