"""Reports of the attack suite: markdown tables and a figure from ``tools/attack.py run`` results.

Rows are the JSON lines ``run`` appends (one per attack); references are the
victims' ``key_conditions.json`` (correct / plain / incorrect mIoU).
:func:`write_attack_report` writes the tables and the rows through the
package's one report writer (:func:`~mmseg_keyprotect.evaluation.reports.write_report`).
"""
from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from ..evaluation.reports import write_report

__all__ = ['read_results', 'read_references', 'report_table', 'budget_table',
           'conditions_table', 'attack_report', 'write_attack_report', 'plot']

#: The attacks compared with training from scratch.
ATTACKS = ['finetune', 'head_only', 'adapter', 'sinkhorn']
#: Attacks shown only when the results have them (they need more than the stolen files).
OPTIONAL_ATTACKS = ['weight_matching']


def attack_kinds(rows: List[Dict[str, Any]]) -> List[str]:
    """The attack columns: :data:`ATTACKS`, then the optional ones the rows have."""
    return ATTACKS + [k for k in OPTIONAL_ATTACKS if any(r['kind'] == k for r in rows)]


def read_results(paths: List[str]) -> List[Dict[str, Any]]:
    """Result rows; attacks started from momentum buffers report as a victim of their own."""
    rows = []
    for path in paths:
        rows += [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    for row in rows:
        if row.get('init', 'checkpoint') != 'checkpoint' and row['kind'] != 'scratch':
            row['victim'] = f"{row['victim']} ({row['init']} init)"
    return rows


def report_table(rows: List[Dict[str, Any]], budget: int,
                 references: Dict[str, Dict[str, float]]) -> str:
    """Markdown: one row per (victim, fraction), one column per attack, at ``budget``."""
    kinds = attack_kinds(rows)
    header = ['victim', 'attacker data', 'correct key', 'plain'] + kinds + \
        ['scratch', 'best attack - scratch']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * 2 + '---:|' * (len(header) - 2)]
    victims = victims_of(rows, references)
    scratch = {(r['fraction'], r['budget']): r['mIoU'] for r in rows if r['kind'] == 'scratch'}
    for victim in victims:
        for fraction in sorted({r['fraction'] for r in rows if r['victim'] == victim}):
            by_kind = {r['kind']: r for r in rows
                       if r['victim'] == victim and r['fraction'] == fraction
                       and r['budget'] == budget}
            if not by_kind:
                continue
            images = next(iter(by_kind.values()))['train_images']
            ref = references.get(victim, {})
            cells = [victim, f'{fraction:.0%} ({images} images)',
                     fmt(ref.get('correct')), fmt(ref.get('plain'))]
            for kind in kinds:
                row = by_kind.get(kind)
                cell = fmt(row['mIoU']) if row else '-'
                if row and row.get('matched_mIoU') is not None:
                    cell += f" (matched: {fmt(row['matched_mIoU'])})"
                if row and row.get('recovered'):
                    share = sum(row['recovered'].values()) / len(row['recovered'])
                    cell += f' ({share:.0%} ch.)'
                cells.append(cell)
            base = scratch.get((fraction, budget))
            best = max((by_kind[k]['mIoU'] for k in kinds if k in by_kind), default=None)
            cells += [fmt(base), fmt(best - base) if None not in (best, base) else '-']
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def victims_of(rows: List[Dict[str, Any]], references: Dict[str, Any]) -> List[str]:
    """Attacked victims: in the order of ``references``, then in the order of ``rows``."""
    attacked = list(dict.fromkeys(r['victim'] for r in rows if r['kind'] != 'scratch'))
    return [v for v in references if v in attacked] + \
        [v for v in attacked if v not in references]


def budget_table(rows: List[Dict[str, Any]]) -> str:
    """Markdown: fine-tuning vs scratch mIoU per budget and data fraction."""
    keys = sorted({(r['fraction'], r['budget']) for r in rows
                   if r['kind'] in ('finetune', 'scratch')})
    budgets = {}
    for r in rows:
        if r['kind'] == 'finetune':
            budgets.setdefault(r['victim'], set()).add(r['budget'])
    victims = [v for v, seen in budgets.items() if len(seen) > 1]  # victims with a sweep
    lines = ['| attacker data | budget (iterations) | scratch | ' +
             ' | '.join(f'fine-tune {v}' for v in victims) + ' |',
             '|---|---:|---:|' + '---:|' * len(victims)]
    for fraction, budget in keys:
        def get(kind, victim=None):
            for r in rows:
                if (r['kind'], r['fraction'], r['budget']) == (kind, fraction, budget) and \
                        (victim is None or r['victim'] == victim):
                    return fmt(r['mIoU'])
            return '-'
        lines.append(f'| {fraction:.0%} | {budget} | {get("scratch")} | ' +
                     ' | '.join(get('finetune', v) for v in victims) + ' |')
    return '\n'.join(lines)


def fmt(value: Optional[float]) -> str:
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f'{value:.2f}'


def plot(rows: List[Dict[str, Any]], budget: int, references: Dict[str, Dict[str, float]],
         out: str) -> None:
    """Bar chart: mIoU per attack and victim at 10% of the data, scratch and correct key."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    kinds = attack_kinds(rows)
    fractions = sorted({r['fraction'] for r in rows})
    victims = victims_of(rows, references)
    fig, axes = plt.subplots(1, len(fractions), figsize=(6 * len(fractions) + 1.5, 3.6),
                             sharey=True)
    axes = [axes] if len(fractions) == 1 else axes
    for ax, fraction in zip(axes, fractions):
        width = 0.8 / len(kinds)
        for k, kind in enumerate(kinds):
            values = [next((r['mIoU'] for r in rows if (r['victim'], r['kind'], r['fraction'],
                                                         r['budget']) == (v, kind, fraction,
                                                                          budget)), 0)
                      for v in victims]
            ax.bar([i + (k - (len(kinds) - 1) / 2) * width for i in range(len(victims))],
                   values, width,
                   label=kind.replace('_', '-'))
        scratch = next((r['mIoU'] for r in rows if (r['kind'], r['fraction'], r['budget']) ==
                        ('scratch', fraction, budget)), None)
        if scratch is not None:
            ax.axhline(scratch, color='k', ls='--', lw=1, label='scratch, same data')
        correct = [references.get(v, {}).get('correct') for v in victims]
        ax.scatter(range(len(victims)), [c or 0 for c in correct], marker='_', s=400,
                   color='r', label='correct key', zorder=3)
        ax.set_xticks(range(len(victims)), victims, rotation=30, ha='right', fontsize=8)
        ax.set_title(f'attacker holds {fraction:.0%} of the training set, {budget} iterations',
                     fontsize=9)
        ax.set_ylabel('mIoU')
    axes[-1].legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def read_references(paths: Optional[List[str]]) -> Dict[str, Dict[str, float]]:
    """victim name -> correct / plain mIoU from key_conditions.json files (NAME=PATH)."""
    refs = {}
    for item in paths or []:
        name, path = item.split('=', 1)
        summary = json.loads(Path(path).read_text())['summary']
        refs[name] = {c: summary[c]['mIoU'] for c in ('correct', 'plain') if c in summary}
        if 'incorrect' in summary:
            inc = summary['incorrect']
            refs[name].update(incorrect=inc['mean']['mIoU'], incorrect_std=inc['std']['mIoU'],
                              incorrect_max=inc['max']['mIoU'], keys=inc['num_keys'])
    return refs


def conditions_table(refs: Dict[str, Dict[str, float]], baseline: Optional[float]) -> str:
    """Markdown: correct / plain / incorrect mIoU per victim, plain as a share of baseline."""
    lines = ['| victim | correct key | plain | plain / baseline | incorrect keys (mean ± std, '
             'max) |', '|---|---:|---:|---:|---:|']
    for name, ref in refs.items():
        share = f"{ref['plain'] / baseline:.1%}" if baseline and 'plain' in ref else '-'
        incorrect = (f"{ref['incorrect']:.2f} ± {ref['incorrect_std']:.2f}, "
                     f"{ref['incorrect_max']:.2f} ({ref['keys']} keys)"
                     if 'incorrect' in ref else '-')
        lines.append(f"| {name} | {fmt(ref.get('correct'))} | {fmt(ref.get('plain'))} | "
                     f'{share} | {incorrect} |')
    return '\n'.join(lines)




def attack_report(rows: List[Dict[str, Any]], budget: int,
                  references: Dict[str, Dict[str, float]], baseline: Optional[float]) -> str:
    """Every table, as one markdown text: conditions (with references), attacks, budgets."""
    tables = [report_table(rows, budget, references), budget_table(rows)]
    if references:
        tables.insert(0, conditions_table(references, baseline))
    return '\n\n'.join(tables)


def write_attack_report(out_dir: str, name: str, rows: List[Dict[str, Any]], budget: int,
                        references: Dict[str, Dict[str, float]],
                        baseline: Optional[float]) -> Tuple[Path, Path]:
    """Write ``NAME.md`` (the tables) and ``NAME.json`` (rows, references) to ``out_dir``."""
    text = attack_report(rows, budget, references, baseline)
    return write_report(out_dir, name, dict(budget=budget, baseline=baseline,
                                            references=references, rows=rows), text)
