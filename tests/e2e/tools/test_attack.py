"""tools/attack.py end to end on a model trained 2 iterations: run, report, key-search."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

REPO = Path(__file__).resolve().parents[3]
VICTIM = REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6-seedkey_demo.py'
TOOL = REPO / 'tools' / 'attack.py'
ENV = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')


def run(args, cwd, timeout=600):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=ENV, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope='module')
def stolen(tmp_path_factory, tiny_run_overrides: Dict[str, Any]):
    """The seed-key Model-6 demo config trained 2 iterations (the 'stolen' checkpoint)."""
    cwd = tmp_path_factory.mktemp('attack')
    options = [f'{k}={v}' for k, v in tiny_run_overrides.items()]
    run([REPO / 'tools' / 'train.py', VICTIM, '--work-dir', cwd / 'victim',
         '--cfg-options', *options], cwd)
    data = [f'{loader}.dataset.data_root={tiny_run_overrides[f"{loader}.dataset.data_root"]}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    return dict(cwd=cwd, checkpoint=cwd / 'victim' / 'iter_2.pth', data=data)


def test_run_every_attack_then_report(stolen):
    cwd = stolen['cwd']
    attack_cfg = cwd / 'perm-m6.py'
    attack_cfg.write_text(
        f"_base_ = ['{REPO}/configs/attacks/_base_/demo_attacks.py']\n"
        f"victim = dict(config='{VICTIM}', checkpoint='{stolen['checkpoint']}')\n"
        "head_modules = ['decode_head.conv_seg']\nbudgets = [2]\nfractions = [0.25]\n")
    out = cwd / 'results.jsonl'
    run([TOOL, 'run', attack_cfg, '--out', out, '--work-dir', cwd / 'attacks',
         '--score-recovery', '--cfg-options', *stolen['data']], cwd)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r['kind'] for r in rows] == ['scratch', 'finetune', 'head_only', 'adapter',
                                         'sinkhorn']
    assert {r['victim'] for r in rows} == {'scratch', 'perm-m6'}
    assert all(r['train_images'] == 2 and r['budget'] == 2 for r in rows)
    assert all(0 <= r['mIoU'] <= 100 for r in rows)
    sinkhorn = rows[-1]
    assert set(sinkhorn['recovered']) == {'decode_head.conv_seg:input'}
    assert 0 <= sinkhorn['recovered']['decode_head.conv_seg:input'] <= 1
    # a second run skips what is done
    run([TOOL, 'run', attack_cfg, '--out', out, '--work-dir', cwd / 'attacks',
         '--cfg-options', *stolen['data']], cwd)
    assert len(out.read_text().splitlines()) == 5
    plot = cwd / 'attacks.png'
    text = run([TOOL, 'report', out, '--budget', '2', '--plot', plot,
                '--out', cwd / 'report' / 'attacks'], cwd)
    assert '| perm-m6 | 25% (2 images) |' in text
    assert plot.stat().st_size > 1000
    assert (cwd / 'report' / 'attacks.md').read_text().strip() == text.strip()
    assert len(json.loads((cwd / 'report' / 'attacks.json').read_text())['rows']) == 5


def test_key_search_cli(stolen):
    out = stolen['cwd'] / 'search.json'
    run([TOOL, 'key-search', VICTIM, stolen['checkpoint'], '--seeds', '3', '--images', '2',
         '--true-seed', '7361', '--out', out, '--cfg-options', *stolen['data']], stolen['cwd'])
    report = json.loads(out.read_text())
    assert report['seeds_tried'] == 3 and report['recovered'] is False  # 7361 not in 0..2
    assert report['keys_per_second'] > 0
    assert float(report['expected_years_for_256_bit_key']) > 1e50
