"""Reports of a key-condition evaluation: summary, markdown table, and the one writer.

:func:`write_report` writes a JSON file and a markdown file side by side; the
test loop (``key_conditions.json/.md``), the demo (``results.json/.md``) and the
attack report use it, so every report casts numpy and torch numbers the same way.
"""
from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any, Dict, Tuple, Union

import numpy as np
import torch

__all__ = ['summarize', 'markdown_table', 'flatten', 'write_report', 'as_float', 'models_table']


def as_float(value: Any) -> Any:
    """A numpy / torch scalar as a Python float (``IoUMetric`` returns numpy floats)."""
    if isinstance(value, (np.floating, np.integer, torch.Tensor)):
        return float(value)
    return value


def _json_default(value: Any) -> Any:
    if isinstance(value, (np.floating, np.integer)) or \
            (isinstance(value, torch.Tensor) and value.numel() == 1):
        return float(value)
    if isinstance(value, (np.ndarray, torch.Tensor)):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f'{type(value).__name__} is not JSON serializable')


def write_report(out_dir: Union[str, Path], name: str, data: Any, markdown: str
                 ) -> Tuple[Path, Path]:
    """Write ``OUT_DIR/NAME.json`` (``data``) and ``OUT_DIR/NAME.md`` (``markdown``).

    Numpy and torch numbers are written as plain numbers.

    Returns:
        (json_path, markdown_path).
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, md_path = out_dir / f'{name}.json', out_dir / f'{name}.md'
    json_path.write_text(json.dumps(data, indent=2, default=_json_default) + '\n')
    md_path.write_text(markdown.rstrip('\n') + '\n')
    return json_path, md_path


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


def flatten(summary: Dict[str, Dict[str, Any]]) -> Dict[str, float]:
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


def _cell(summary: Dict[str, Any], condition: str, metric: str) -> str:
    if condition != 'incorrect':
        return f'{summary[condition][metric]:.2f}'
    inc = summary['incorrect']
    return (f"{inc['mean'][metric]:.2f} ± {inc['std'][metric]:.2f} "
            f"[{inc['min'][metric]:.2f}, {inc['max'][metric]:.2f}]")


def models_table(results: Dict[str, Dict[str, Any]]) -> str:
    """Markdown: one row per model and metric, from each model's :func:`summarize` output.

    Pooled mIoU (mmseg's ``IoUMetric``) and per-image mIoU (paper 2); a model without
    incorrect keys (unprotected) shows its one result under correct and plain.
    """
    lines = ['| model | metric | correct | plain | incorrect (mean ± std [min, max]) |',
             '|---|---|---:|---:|---:|']
    metrics = (('mIoU', 'mIoU (pooled)'), ('mIoU_per_image', 'mIoU per image'))
    for name, summary in results.items():
        for metric, label in metrics:
            if metric not in summary['correct']:
                continue
            correct = _cell(summary, 'correct', metric)
            if 'incorrect' not in summary:  # unprotected: every condition is the same model
                lines.append(f'| {name} | {label} | {correct} | {correct} (same model) | - |')
                continue
            lines.append(f"| {name} | {label} | {correct} | {_cell(summary, 'plain', metric)} | "
                         f"{_cell(summary, 'incorrect', metric)} "
                         f"({summary['incorrect']['num_keys']} keys) |")
    return '\n'.join(lines)
