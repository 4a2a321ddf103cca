"""tools/attack.py's table of key conditions, from key_conditions.json files.

The attacks and the key search run end to end: ``tests/e2e/tools/test_attack.py``.
"""
from __future__ import annotations

import json
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]


def test_report_conditions_table(tmp_path):
    sys.path.insert(0, str(REPO / 'tools'))
    import attack
    summary = dict(correct=dict(mIoU=80.0), plain=dict(mIoU=16.0),
                   incorrect=dict(mean=dict(mIoU=17.0), std=dict(mIoU=1.5), max=dict(mIoU=25.0),
                                  num_keys=100))
    path = tmp_path / 'key_conditions.json'
    path.write_text(json.dumps(dict(summary=summary)))
    refs = attack._references([f'victim={path}'])
    table = attack.conditions_table(refs, baseline=80.0)
    assert '| victim | 80.00 | 16.00 | 20.0% | 17.00 ± 1.50, 25.00 (100 keys) |' in table
