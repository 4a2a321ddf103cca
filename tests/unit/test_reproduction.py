"""The Stanford Background comparison's rows, floor and table (mmseg_keyprotect/reproduction.py).

Runs are faked by writing the files a finished run leaves (the test loop's
``key_conditions.json``, the tool's ``timing.json``, mmengine's ``scalars.json``).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmseg_keyprotect.reproduction import (HEADLINE, ROWS, headline_markdown, collect, floor_scores, is_done,
                                           missing_runs, results_markdown, run_dir,
                                           select_rows, validation_curve)

REPO = Path(__file__).resolve().parents[2]
INFO = {'date': '2026-12-03 12:00 UTC', 'processor': 'test CPU', 'cpu_count': 2,
        'test_images': 2}


def _png(path: Path, label: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(label.astype(np.uint8), mode='L').save(path)


def test_rows_name_existing_configs_with_the_required_seeds():
    assert all((REPO / row.config).is_file() for row in ROWS)
    two_seeds = {r.name for r in ROWS if len(r.seeds) >= 2}
    assert {'baseline (unprotected)', 'SHF M=4', 'Model-6 (permutation, head)',
            'recommended (Model-1..6 + encrypted weights)'} <= two_seeds
    assert [r.incorrect for r in ROWS if r.name.startswith('baseline')] == [0, 100]
    after = [r for r in ROWS if r.after_training]
    # the trained baseline, protected: the same config and seeds, its own folder
    assert len(after) == 1 and after[0].config == ROWS[0].config
    assert after[0].seeds == ROWS[0].seeds and after[0].slug == ROWS[0].slug + '_protected'
    assert len({r.slug for r in ROWS}) == len(ROWS)


@pytest.mark.parametrize('row', [r for r in ROWS if '-b' in r.config], ids=lambda r: r.name)
def test_block_sizes_divide_the_crop(row):
    cfg = Config.fromfile(str(REPO / row.config))
    size = cfg.train_dataloader.dataset.pipeline[5].block_size
    assert all(side % size == 0 for side in cfg.crop_size)
    assert f'-b{size}_' in row.config


def test_floor_is_the_most_frequent_training_class_everywhere(tmp_path):
    train, test = tmp_path / 'train', tmp_path / 'test'
    _png(train / 'a.png', np.array([[2, 2, 2], [1, 255, 255]]))
    _png(train / 'b.png', np.array([[2, 0, 0], [1, 1, 255]]))  # 2: 4 px, 1: 3 px, 0: 2 px
    _png(test / 'c.png', np.array([[2, 2, 0, 0]]))  # IoU(2) = 2/4, IoU(0) = 0 -> 25
    _png(test / 'd.png', np.array([[2, 2, 2, 255]]))  # IoU(2) = 1 -> 100
    floor = floor_scores(train, test, num_classes=3)
    assert floor['class_index'] == 2
    # pooled: class 2: 5 / 7 (union: 7 scored pixels), class 0: 0 / 2
    assert floor['mIoU'] == pytest.approx(100 * (5 / 7 + 0) / 2)
    assert floor['mIoU_per_image'] == pytest.approx((25 + 100) / 2)


def _fake_run(work_dir: Path, correct: float, plain: float, wrong, curve,
              cpu_s: float = 330.0) -> None:
    work_dir.mkdir(parents=True)
    per_condition = {'correct': {'mIoU': correct, 'mIoU_per_image': correct + 1}}
    if wrong:
        per_condition['plain'] = {'mIoU': plain, 'mIoU_per_image': plain + 1}
        for i, value in enumerate(wrong):
            per_condition[f'incorrect/{i}'] = {'mIoU': value, 'mIoU_per_image': value + 1}
    (work_dir / 'key_conditions.json').write_text(json.dumps(
        {'per_condition': per_condition, 'summary': {}}))
    (work_dir / 'timing.json').write_text(json.dumps({'train_s': 300.0, 'test_s': 60.0,
                                                         'cpu_s': cpu_s}))
    scalars = work_dir / '20261203_120000' / 'vis_data' / 'scalars.json'
    scalars.parent.mkdir(parents=True)
    scalars.write_text(''.join(json.dumps({'mIoU': v, 'step': s}) + '\n' for s, v in curve)
                       + json.dumps({'loss': 1.0, 'step': 10}) + '\n')


def test_collect_aggregates_seeds_and_keys_and_the_table_shows_them(tmp_path):
    baseline, shf4 = ROWS[0], next(r for r in ROWS if r.name == 'SHF M=4')
    _fake_run(run_dir(tmp_path, baseline, 0), 50.0, 0, [], [(250, 30.0), (500, 40.0)])
    _fake_run(run_dir(tmp_path, baseline, 1), 54.0, 0, [], [(250, 31.0)], cpu_s=390.0)
    _fake_run(run_dir(tmp_path, shf4, 0), 40.0, 30.0, [10.0, 20.0], [(250, 20.0)])
    assert is_done(run_dir(tmp_path, baseline, 0))
    todo = missing_runs(tmp_path)
    assert (shf4, 1) in todo and (baseline, 0) not in todo
    # every row's first seed before any second seed
    assert max(i for i, (_, s) in enumerate(todo) if s == 0) < todo.index((shf4, 1))
    assert validation_curve(run_dir(tmp_path, baseline, 0)) == [(250, 30.0), (500, 40.0)]

    results = collect(tmp_path)
    base = results[baseline.name]
    assert base['seeds_done'] == [0, 1]
    assert base['mIoU']['correct'] == pytest.approx(
        {'mean': 52.0, 'min': 50.0, 'max': 54.0, 'std': 2.0, 'n': 2})
    assert 'incorrect' not in base['mIoU']
    shf = results[shf4.name]
    assert shf['seeds_done'] == [0]
    assert shf['mIoU_per_image']['incorrect']['mean'] == pytest.approx(16.0)
    assert 'mIoU' not in results['SHF M=8']  # not run

    floor = {'mIoU': 5.0, 'mIoU_per_image': 20.0}
    table = results_markdown(results, floor, INFO)
    assert '| baseline (unprotected) | 0, 1 | 53.0 [51.0, 55.0] | same model | — | 20.0 |' \
        in table
    assert '| SHF M=4 | 0 | 41.0 | 31.0 | 16.0 ± 5.0 [11.0, 21.0] (2) | 20.0 | 59.4 | ' \
        '47.3 / 45.4 / 36.7 |' in table
    assert '| SHF M=8 | — | not run yet |' in table
    assert '| baseline protected after training (tools/protect.py, points=auto) | — | ' \
        'not run yet |' in table
    assert '- baseline (unprotected), seed 0: 250: 30.0, 500: 40.0' in table
    # 360 s of wall time per run; 330 s and 390 s of CPU time
    assert '| baseline (unprotected) | 2 | 6.0 [6.0, 6.0] | 6.0 [5.5, 6.5] |' in table


def test_select_rows():
    assert [r.name for r in select_rows(['shf-b4', 'baseline'])] == \
        ['baseline (unprotected)', 'SHF M=4',
         'baseline protected after training (tools/protect.py, points=auto)']
    assert select_rows(None) == list(ROWS)
    assert [r.slug for r in select_rows(['_protected'])] == \
        ['fcn_r18-d16_6k_stanford-128x96_protected']
    with pytest.raises(ValueError, match="--rows 'shf-b3' matches no row"):
        select_rows(['shf-b3'])


def test_the_readme_headline_shows_its_rows_from_the_runs(tmp_path):
    baseline, shf4 = ROWS[0], next(r for r in ROWS if r.name == 'SHF M=4')
    _fake_run(run_dir(tmp_path, baseline, 0), 50.0, 0, [], [(250, 30.0)])
    _fake_run(run_dir(tmp_path, baseline, 1), 54.0, 0, [], [(250, 31.0)])
    _fake_run(run_dir(tmp_path, shf4, 0), 40.0, 30.0, [10.0, 20.0], [(250, 20.0)])
    table = headline_markdown(collect(tmp_path), {'mIoU': 5.0, 'mIoU_per_image': 20.0}, INFO)
    assert 'seeds 0, 1;' in table and '(2 keys per seed)' in table and 'scores 20.0 / 5.0' in table
    assert '| baseline (unprotected) | 53.0 [51.0, 55.0] / 52.0 [50.0, 54.0] | same model | — |' \
        in table
    assert '| SHF M=4 | 41.0 / 40.0 | 31.0 / 30.0 | 16.0 ± 5.0 / 15.0 ± 5.0 |' in table
    assert f'| {HEADLINE[2]} | not run yet | | |' in table
    assert all(name in table for name in HEADLINE) and 'SHF M=8' not in table
