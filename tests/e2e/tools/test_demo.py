"""tools/demo.py (`make demo`) end to end, shortened: 2 iterations, 2 incorrect keys."""
from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from pathlib import Path

from mmengine.runner import CheckpointLoader

REPO = Path(__file__).resolve().parents[3]


def test_demo_runs_from_a_fresh_output_directory(tmp_path):
    out, data = tmp_path / 'demo', tmp_path / 'data'
    proc = subprocess.run(
        [sys.executable, str(REPO / 'tools' / 'demo.py'), '--out', str(out), '--data-root',
         str(data), '--max-iters', '2', '--incorrect', '2', '--num-train', '8', '--num-val', '4',
         '--num-test', '3'],
        capture_output=True, text=True, timeout=900,
        env={k: v for k, v in os.environ.items() if k != 'KP_DEMO_KEY_FILE'})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    key = out / 'owner.key'
    assert stat.S_IMODE(key.stat().st_mode) == 0o600
    report = json.loads((out / 'results.json').read_text())
    results = report['models']
    assert list(results) == ['baseline', 'block cipher (SHF, M=2)',
                             'recommended: permutation (Model-1..6) + encrypted weights',
                             'baseline, protected after training']
    for name, summary in results.items():
        assert 0 <= summary['correct']['mIoU'] <= 100
        assert 0 <= summary['correct']['mIoU_per_image'] <= 100
        if name != 'baseline':
            assert summary['incorrect']['num_keys'] == 2
    assert report['run']['seconds'] > 0 and report['run']['cpu_count'] >= 1
    # header, rule, 4 models x (pooled, per-image)
    assert (out / 'results.md').read_text().count('\n') == 10
    # protected after training: the baseline's correct-key numbers, at no training cost
    protected = results['baseline, protected after training']
    assert abs(protected['correct']['mIoU'] - results['baseline']['correct']['mIoU']) < 0.05
    # the reported numbers come from the test split, not the val split used for selection
    for config in ('fcn_r18-d8_baseline_demo', 'fcn_r18-d8_perm-m1to6-encw_demo'):
        tested = json.loads((out / config / 'key_conditions.json').read_text())
        assert tested['dataset_size'] == 3  # the 3 test images, not the 4 val images
    assert len(list(out.glob('conditions_*.png'))) == 2
    # the recommended model's checkpoint holds encrypted weights
    checkpoint = next((out / 'fcn_r18-d8_perm-m1to6-encw_demo').glob('best_mIoU_iter_*.pth'))
    assert 'keyprotect_encryption' in CheckpointLoader.load_checkpoint(str(checkpoint))['state_dict']
