"""evaluation.reports: the one JSON + markdown writer and the tables it writes."""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mmseg_keyprotect.evaluation.reports import (flatten, markdown_table, models_table,
                                                 summarize, write_report)

RESULTS = {
    'correct': {'mIoU': 80.0, 'aAcc': 90.0},
    'plain': {'mIoU': 10.0, 'aAcc': 50.0},
    'incorrect/000': {'mIoU': 12.0, 'aAcc': 51.0},
    'incorrect/001': {'mIoU': 14.0, 'aAcc': 53.0},
}


def test_summary_table_and_flat_metrics():
    summary = summarize(RESULTS)
    assert summary['incorrect']['mean']['mIoU'] == 13.0
    assert summary['incorrect']['std']['mIoU'] == 1.0
    assert summary['incorrect']['num_keys'] == 2
    table = markdown_table(summary)
    assert '| correct | 80.00 | 90.00 |' in table
    assert '13.00 ± 1.00 [12.00, 14.00]' in table and '2 keys' in table
    flat = flatten(summary)
    assert flat['correct/mIoU'] == 80.0 and flat['incorrect/mIoU_max'] == 14.0


def test_write_report_casts_numpy_and_torch_numbers(tmp_path):
    data = {'a': np.float32(1.5), 'b': np.int64(3), 'c': torch.tensor(2.0),
            'd': np.arange(3), 'e': [np.float64(0.25)]}
    json_path, md_path = write_report(tmp_path / 'out', 'report', data, '| x |\n\n')
    assert json.loads(json_path.read_text()) == {'a': 1.5, 'b': 3.0, 'c': 2.0, 'd': [0, 1, 2],
                                                 'e': [0.25]}
    assert md_path.read_text() == '| x |\n'
    with pytest.raises(TypeError, match='object is not JSON serializable'):
        write_report(tmp_path, 'bad', {'x': object()}, '')


def test_models_table_shows_each_model_and_the_unprotected_once():
    protected = summarize(RESULTS)
    unprotected = summarize({'correct': {'mIoU': 70.0}})
    table = models_table({'baseline': unprotected, 'shf': protected})
    assert '| baseline | mIoU (pooled) | 70.00 | 70.00 (same model) | - |' in table
    assert '| shf | mIoU (pooled) | 80.00 | 10.00 | 13.00 ± 1.00 [12.00, 14.00] (2 keys) |' \
        in table
