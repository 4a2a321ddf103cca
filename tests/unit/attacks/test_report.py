"""attacks.report: the tables of tools/attack.py report, from result rows and key_conditions.json.

The attacks and the key search run end to end: ``tests/e2e/tools/test_attack.py``.
"""
from __future__ import annotations

import json

from mmseg_keyprotect.attacks.report import (attack_report, conditions_table, read_references,
                                             write_attack_report)


def test_report_conditions_table(tmp_path):
    summary = dict(correct=dict(mIoU=80.0), plain=dict(mIoU=16.0),
                   incorrect=dict(mean=dict(mIoU=17.0), std=dict(mIoU=1.5), max=dict(mIoU=25.0),
                                  num_keys=100))
    path = tmp_path / 'key_conditions.json'
    path.write_text(json.dumps(dict(summary=summary)))
    refs = read_references([f'victim={path}'])
    table = conditions_table(refs, baseline=80.0)
    assert '| victim | 80.00 | 16.00 | 20.0% | 17.00 ± 1.50, 25.00 (100 keys) |' in table


def test_attack_report_compares_attacks_with_scratch(tmp_path):
    rows = [dict(victim='scratch', kind='scratch', fraction=0.1, budget=100, mIoU=40.0,
                 train_images=4, seed=0),
            dict(victim='v', kind='finetune', fraction=0.1, budget=100, mIoU=43.5,
                 train_images=4, seed=0),
            dict(victim='v', kind='adapter', fraction=0.1, budget=100, mIoU=41.0,
                 train_images=4, seed=0)]
    text = attack_report(rows, 100, {}, None)
    assert '| v | 10% (4 images) | - | - | 43.50 | - | 41.00 | - | 40.00 | 3.50 |' in text
    json_path, md_path = write_attack_report(str(tmp_path), 'attacks', rows, 100, {}, None)
    assert md_path.read_text().strip() == text.strip()
    assert json.loads(json_path.read_text())['rows'][1]['mIoU'] == 43.5
