"""The Stanford Background comparison behind ``make reproduce``: rows, floor, table.

``tools/reproduce.py`` trains and tests each :data:`ROWS` entry with mmseg's own
tools; this module holds what the tool reads and writes:

* :data:`ROWS`: the configs, their seeds, how many incorrect keys each is tested
  with and the papers' numbers for the same row (fractions, as printed);
* :func:`run_dir` / :func:`is_done`: where a run lives, and whether it finished
  (so the tool can be resumed);
* :func:`floor_scores`: the score of predicting the most frequent training class
  everywhere (the floor plain / incorrect keys are compared with);
* :func:`validation_curve`: correct-key validation mIoU per iteration of a run;
* :func:`collect` and :func:`results_markdown`: the one table, from the runs'
  own reports (``key_conditions.json``, ``timing.json``), never typed in.
"""
from __future__ import annotations

import json
import statistics
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch
from PIL import Image

from .evaluation.metrics import image_miou, intersect_and_union

__all__ = ['Row', 'ROWS', 'config_name', 'short_name', 'METRICS', 'HEADLINE',
           'headline_markdown', 'run_dir', 'is_done', 'floor_scores', 'validation_curve',
           'collect', 'results_markdown']

CONFIG_DIR = 'configs/stanford_background'
#: The parts of a row's config name: ``{MODEL}_{protection}_{SCHEDULE}_{INPUT}.py``.
MODEL, SCHEDULE, INPUT = 'fcn_r18-d16', '6k', 'stanford-128x96'
#: (metric key in the reports, label); the papers' numbers are per-image mean IoUs.
METRICS = (('mIoU_per_image', 'mIoU per image (paper 2\'s metric)'),
           ('mIoU', 'mIoU pooled (mmseg)'))
#: What a run writes when it finished (the test loop's report; the tool's timing).
DONE_FILES = ('key_conditions.json', 'timing.json')


@dataclass(frozen=True)
class Row:
    """One row of the comparison.

    Attributes:
        name: what the table calls it.
        config: config path relative to the repository.
        seeds: training seeds (``randomness.seed``).
        incorrect: incorrect keys the test draws (0 for the unprotected baseline).
        paper: the papers' numbers for this row (fractions): ``paper1_correct``
            (paper 1 Table 1), ``paper2_correct``, ``paper2_plain``,
            ``paper2_incorrect`` (paper 2 Tables I/II).
        after_training: not trained: ``config``'s trained model (same seed) is
            protected with ``tools/protect.py`` (``points='auto'``, sealed
            weights), then tested.
    """
    name: str
    config: str
    seeds: Tuple[int, ...] = (0,)
    incorrect: int = 100
    paper: Mapping[str, float] = field(default_factory=dict)
    after_training: bool = False

    @property
    def slug(self) -> str:
        """The run's folder name (the config stem; ``_protected`` after training)."""
        return Path(self.config).stem + ('_protected' if self.after_training else '')


def config_name(protection: str) -> str:
    """File name of a row's config (``protection`` '' for the baseline)."""
    middle = f'{protection}_' if protection else ''
    return f'{MODEL}_{middle}{SCHEDULE}_{INPUT}.py'


def short_name(slug: str) -> str:
    """A run folder's name without the model and input parts (``shf-b4_6k``)."""
    return slug.replace(f'{MODEL}_', '').replace(f'_{INPUT}', '')


def _config(protection: str) -> str:
    return f'{CONFIG_DIR}/{config_name(protection)}'


def _block_rows() -> List[Row]:
    # paper 1 Table 1 (correct), paper 2 Table II (correct, plain, incorrect)
    papers = {
        ('shf', 4): (0.5941, 0.4731, 0.4536, 0.3671), ('shf', 8): (0.4723, 0.3599, 0.3691, 0.2527),
        ('shf', 16): (0.2958, 0.2214, 0.1994, 0.1150),
        ('np', 4): (0.5695, 0.4706, 0.3359, 0.1505), ('np', 8): (0.5173, 0.4094, 0.3838, 0.0771),
        ('np', 16): (0.4329, 0.3439, 0.2114, 0.0832),
        ('ffx', 4): (0.4944, 0.3823, 0.0157, 0.0012), ('ffx', 8): (0.4651, 0.3613, 0.0001, 0.0012),
        ('ffx', 16): (0.3444, 0.2611, 0.0007, 0.0079),
    }
    rows = []
    for (cipher, size), numbers in papers.items():
        headline = (cipher, size) == ('shf', 4)
        rows.append(Row(
            name=f'{cipher.upper()} M={size}', config=_config(f'{cipher}-b{size}'),
            seeds=(0, 1) if headline else (0,),
            # the cipher x block-size sweep: fewer incorrect keys (every key is a full pass)
            incorrect=100 if headline else 20,
            paper=dict(zip(('paper1_correct', 'paper2_correct', 'paper2_plain',
                            'paper2_incorrect'), numbers))))
    return rows


ROWS: Tuple[Row, ...] = (
    Row('baseline (unprotected)', _config(''), seeds=(0, 1), incorrect=0,
        paper=dict(paper1_correct=0.7080, paper2_correct=0.5966)),
    *_block_rows(),
    Row('Model-1 (permutation, stem)', _config('perm-m1'),
        paper=dict(paper2_correct=0.5290, paper2_plain=0.1678, paper2_incorrect=0.0356)),
    Row('Model-6 (permutation, head)', _config('perm-m6'), seeds=(0, 1),
        paper=dict(paper2_correct=0.5888, paper2_plain=0.1595, paper2_incorrect=0.0000)),
    Row('recommended (Model-1..6 + encrypted weights)', _config('perm-m1to6-encw'),
        seeds=(0, 1)),
    Row('baseline protected after training (tools/protect.py, points=auto)', _config(''),
        seeds=(0, 1), after_training=True),
)


def run_dir(out: Path, row: Row, seed: int) -> Path:
    """The work_dir of ``row`` trained with ``seed``."""
    return Path(out) / row.slug / f'seed{seed}'


def is_done(work_dir: Path) -> bool:
    """Whether the run in ``work_dir`` was trained and tested (its reports exist)."""
    return all((Path(work_dir) / name).is_file() for name in DONE_FILES)


# ----------------------------------------------------------------------- floor
def _labels(ann_dir: Path) -> List[np.ndarray]:
    paths = sorted(Path(ann_dir).glob('*.png'))
    if not paths:
        raise FileNotFoundError(f'no label PNGs in {ann_dir}')
    out = []
    for path in paths:
        with Image.open(path) as png:
            out.append(np.asarray(png, dtype=np.uint8))
    return out


def floor_scores(train_ann_dir: Path, test_ann_dir: Path, num_classes: int,
                 ignore_index: int = 255) -> Dict[str, Any]:
    """Scores of predicting the most frequent training class at every test pixel.

    Returns:
        dict: ``class_index``, ``mIoU`` (pooled, as mmseg's ``IoUMetric``) and
        ``mIoU_per_image`` (paper 2's), both in percent like the test reports.
    """
    counts = np.zeros(256, dtype=np.int64)
    for label in _labels(train_ann_dir):
        counts += np.bincount(label.ravel(), minlength=256)
    most = int(np.argmax(counts[:num_classes]))
    inter = torch.zeros(num_classes)
    union = torch.zeros(num_classes)
    per_image = []
    for label in _labels(test_ann_dir):
        gt = torch.from_numpy(label.astype(np.int64))
        pred = torch.full_like(gt, most)
        area_i, area_u, _, _ = intersect_and_union(pred, gt, num_classes, ignore_index)
        inter += area_i
        union += area_u
        score = image_miou(pred, gt, num_classes, ignore_index)
        if score == score:  # NaN: every pixel ignored
            per_image.append(score)
    present = union > 0
    pooled = float((inter[present] / union[present]).mean())
    return {'class_index': most, 'mIoU': 100 * pooled,
            'mIoU_per_image': 100 * statistics.fmean(per_image)}


# ----------------------------------------------------------------------- reading runs
def validation_curve(work_dir: Path) -> List[Tuple[int, float]]:
    """``(iteration, correct-key mIoU)`` of each validation of the run (mmengine's scalars)."""
    points: Dict[int, float] = {}
    for scalars in sorted(Path(work_dir).glob('*/vis_data/scalars.json')):
        for line in scalars.read_text().splitlines():
            record = json.loads(line)
            if 'mIoU' in record and 'step' in record:
                points[int(record['step'])] = float(record['mIoU'])
    return sorted(points.items())


def _read_run(work_dir: Path) -> Dict[str, Any]:
    report = json.loads((work_dir / 'key_conditions.json').read_text())
    timing = json.loads((work_dir / 'timing.json').read_text())
    return {'per_condition': report['per_condition'], 'summary': report['summary'],
            'timing': timing, 'curve': validation_curve(work_dir)}


def _spread(values: Sequence[float]) -> Dict[str, Any]:
    return {'mean': statistics.fmean(values), 'min': min(values), 'max': max(values),
            'std': statistics.pstdev(values), 'n': len(values)}


def collect(out: Path, rows: Sequence[Row] = ROWS) -> Dict[str, Any]:
    """Every finished run of ``rows`` under ``out``, aggregated per row.

    Per row and metric: ``correct`` and ``plain`` over the seeds (mean, min,
    max, std, n), ``incorrect`` over every incorrect key of every seed; runs not
    finished are listed under ``missing``.
    """
    results: Dict[str, Any] = {}
    for row in rows:
        runs = {seed: _read_run(run_dir(out, row, seed)) for seed in row.seeds
                if is_done(run_dir(out, row, seed))}
        # incorrect keys each run was tested with (as its report holds them)
        keys = sorted({sum(label.startswith('incorrect/') for label in r['per_condition'])
                       for r in runs.values()}) or [row.incorrect]
        entry: Dict[str, Any] = {'config': row.config, 'seeds_planned': list(row.seeds),
                                 'seeds_done': sorted(runs),
                                 'incorrect_keys': '/'.join(map(str, keys)),
                                 'paper': dict(row.paper), 'runs': runs}
        if runs:
            for metric, _ in METRICS:
                cells = {}
                for condition in ('correct', 'plain'):
                    values = [r['per_condition'][condition][metric] for r in runs.values()
                              if condition in r['per_condition']]
                    if values:
                        cells[condition] = _spread(values)
                wrong = [m[metric] for r in runs.values()
                         for label, m in r['per_condition'].items()
                         if label.startswith('incorrect/')]
                if wrong:
                    cells['incorrect'] = _spread(wrong)
                entry[metric] = cells
            entry['wall_s'] = _spread([r['timing']['train_s'] + r['timing']['test_s']
                                       for r in runs.values()])
            cpu = [r['timing']['cpu_s'] for r in runs.values() if 'cpu_s' in r['timing']]
            if cpu:
                entry['cpu_s'] = _spread(cpu)
        results[row.name] = entry
    return results


# ----------------------------------------------------------------------- the table
def _seeds_cell(cell: Mapping[str, Any]) -> str:
    if cell['n'] == 1:
        return f"{cell['mean']:.1f}"
    return f"{cell['mean']:.1f} [{cell['min']:.1f}, {cell['max']:.1f}]"


def _incorrect_cell(cell: Mapping[str, Any]) -> str:
    return f"{cell['mean']:.1f} ± {cell['std']:.1f} [{cell['min']:.1f}, {cell['max']:.1f}]"


def _paper_cell(paper: Mapping[str, float], key: str) -> str:
    return f'{100 * paper[key]:.1f}' if key in paper else '—'


def results_markdown(results: Mapping[str, Any], floor: Mapping[str, Any],
                     info: Mapping[str, Any]) -> str:
    """The comparison as markdown: one table per metric, then wall times and curves."""
    lines = [f"Stanford Background, test split ({info.get('test_images', '?')} images), "
             f"generated by tools/reproduce.py on {info['date']}: {info['processor']}, "
             f"{info['cpu_count']} cores, "
             'trained from scratch. mIoU in percent. Correct and plain: mean '
             '[min, max] over the seeds; incorrect: mean ± std [min, max] over every '
             'incorrect key of every seed. Paper numbers: VOC 2012, FCN-R50, 256x256 '
             '(paper 1 Table 1 correct; paper 2 Tables I/II), per-image mIoU.', '']
    for metric, label in METRICS:
        lines += [f'### {label}', '',
                  '| row | seeds | correct | plain | incorrect (keys) | floor | '
                  'paper 1 correct | paper 2 correct / plain / incorrect |',
                  '|---|---|---:|---:|---:|---:|---:|---:|']
        for name, entry in results.items():
            paper = entry['paper']
            paper2 = ' / '.join(_paper_cell(paper, f'paper2_{c}')
                                for c in ('correct', 'plain', 'incorrect'))
            floor_cell = f'{floor[metric]:.1f}'
            if metric not in entry:
                lines.append(f'| {name} | — | not run yet | not run yet | not run yet | '
                             f'{floor_cell} | {_paper_cell(paper, "paper1_correct")} | '
                             f'{paper2} |')
                continue
            cells = entry[metric]
            seeds = ', '.join(str(s) for s in entry['seeds_done'])
            if 'incorrect' in cells:
                plain = _seeds_cell(cells['plain'])
                wrong = (f"{_incorrect_cell(cells['incorrect'])} "
                         f"({entry['incorrect_keys']})")
            else:
                plain, wrong = 'same model', '—'
            lines.append(f"| {name} | {seeds} | {_seeds_cell(cells['correct'])} | {plain} | "
                         f"{wrong} | {floor_cell} | {_paper_cell(paper, 'paper1_correct')} | "
                         f'{paper2} |')
        lines.append('')
    lines += ['### Time per run (train + key-condition test)', '',
              'Wall minutes depend on what else the machine ran; CPU minutes (user + system '
              'of the tools\' processes) do not.', '',
              '| row | runs | wall minutes (mean [min, max]) | CPU minutes |', '|---|---:|---:|---:|']
    for name, entry in results.items():
        if 'wall_s' in entry:
            wall = {k: v / 60 if k != 'n' else v for k, v in entry['wall_s'].items()}
            cpu = {k: v / 60 if k != 'n' else v for k, v in entry['cpu_s'].items()} \
                if 'cpu_s' in entry else None
            lines.append(f"| {name} | {wall['n']} | {_seeds_cell(wall)} | "
                         f"{_seeds_cell(cpu) if cpu else '—'} |")
    lines += ['', '### Validation curves (correct-key pooled mIoU on the 72-image '
              'selection split)', '']
    for name, entry in results.items():
        for seed, run in entry['runs'].items():
            if not run['curve']:  # protected after training: no training of its own
                continue
            curve = ', '.join(f'{it}: {v:.1f}' for it, v in run['curve'])
            lines.append(f'- {name}, seed {seed}: {curve}')
    return '\n'.join(lines)


#: The README's rows (the headline of the comparison).
HEADLINE = ('baseline (unprotected)', 'SHF M=4', 'Model-6 (permutation, head)',
            'recommended (Model-1..6 + encrypted weights)',
            'baseline protected after training (tools/protect.py, points=auto)')


def headline_markdown(results: Mapping[str, Any], floor: Mapping[str, Any],
                      info: Mapping[str, Any]) -> str:
    """The README's short table: the :data:`HEADLINE` rows, per-image / pooled mIoU."""
    def pair(entry: Mapping[str, Any], condition: str, cell) -> str:
        cells = [entry[m].get(condition) for m, _ in METRICS]
        return ' / '.join(cell(c) if c else '—' for c in cells)

    seeds = sorted({s for name in HEADLINE if name in results
                    for s in results[name]['seeds_done']})
    keys = sorted({int(k) for n in HEADLINE if n in results and results[n]['seeds_done']
                   and 'incorrect' in results[n].get('mIoU', {})
                   for k in results[n]['incorrect_keys'].split('/')}, reverse=True)
    lines = [f"Generated by tools/reproduce.py on {info['date']} ({info['processor']}, "
             f"{info['cpu_count']} cores); seeds {', '.join(map(str, seeds)) or 'none yet'}; "
             'mIoU per image / pooled, in percent; correct and plain: mean [min, max] over '
             'the seeds; incorrect: mean ± std over every incorrect key of every seed '
             f"({' or '.join(map(str, keys)) or 'no'} keys per seed); predicting the most "
             'frequent class everywhere scores '
             f"{floor['mIoU_per_image']:.1f} / {floor['mIoU']:.1f}.", '',
             '| model | correct | plain | incorrect |', '|---|---:|---:|---:|']
    for name in HEADLINE:
        entry = results.get(name)
        if not entry or not entry['seeds_done']:
            lines.append(f'| {name} | not run yet | | |')
            continue
        has_keys = 'incorrect' in entry['mIoU']
        plain = pair(entry, 'plain', _seeds_cell) if has_keys else 'same model'
        wrong = pair(entry, 'incorrect', lambda c: f"{c['mean']:.1f} ± {c['std']:.1f}") \
            if has_keys else '—'
        lines.append(f"| {name} | {pair(entry, 'correct', _seeds_cell)} | {plain} | {wrong} |")
    return '\n'.join(lines)


def missing_runs(out: Path, rows: Sequence[Row] = ROWS) -> List[Tuple[Row, int]]:
    """``(row, seed)`` of every run not finished yet under ``out``: every row's first
    seed before any second seed, and rows in table order within a seed."""
    runs = [(row, seed) for row in rows for seed in row.seeds
            if not is_done(run_dir(out, row, seed))]
    return sorted(runs, key=lambda run: run[0].seeds.index(run[1]))


def select_rows(names: Optional[Sequence[str]], rows: Sequence[Row] = ROWS) -> List[Row]:
    """The rows whose config stem or name contains one of ``names`` (all rows if None).

    Raises:
        ValueError: naming a selector that matches no row.
    """
    if not names:
        return list(rows)
    chosen = []
    for selector in names:
        match = [r for r in rows if selector in r.slug or selector in r.name]
        if not match:
            raise ValueError(f'--rows {selector!r} matches no row; rows: '
                             + ', '.join(r.slug for r in rows))
        chosen += [r for r in match if r not in chosen]
    return [r for r in rows if r in chosen]
