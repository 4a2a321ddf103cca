"""Evaluation under key conditions: conditions, strategies, metrics, reports and the loops.

* :mod:`.conditions`: :class:`~.conditions.KeyCondition` (correct / plain /
  incorrect) and incorrect keys drawn distinct;
* :mod:`.strategies`: ``ConditionEvaluation`` (one pass with replay, or one
  pass per condition) and ``restart_workers``;
* :mod:`.metrics`: paper 2's per-image mean IoU (``PerImageIoUMetric``), a fast
  IoU for many conditions;
* :mod:`.reports`: summary, markdown table and ``write_report`` (JSON + markdown);
* :mod:`.loops`: ``KeyConditionTestLoop`` / ``KeyConditionValLoop`` (mmseg ``LOOPS``).

This ``__init__`` imports only the layer-free parts (conditions, reports), so
the protection object can use them; the package's ``__init__`` imports the
loops and metrics to register them.
"""
from .conditions import KeyCondition, condition_list, draw_incorrect_keys, make_conditions
from .reports import flatten, markdown_table, summarize, write_report

__all__ = [
    'KeyCondition', 'condition_list', 'draw_incorrect_keys', 'make_conditions', 'flatten',
    'markdown_table', 'summarize', 'write_report'
]
