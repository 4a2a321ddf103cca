"""tools/train.py and tools/test.py: mmseg's own tools, run end to end in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).parents[2]
CONFIG = 'configs/demo/fcn_r18-d8_baseline_demo.py'


def _run(*args: Any) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _cfg_options(overrides: Dict[str, Any]) -> List[str]:
    return ['--cfg-options', *(f'{key}={value}' for key, value in overrides.items())]


def test_train_then_test_a_checkpoint(tmp_path: Path, tiny_run_overrides: Dict[str, Any]):
    train_dir, test_dir = tmp_path / 'train', tmp_path / 'test'
    _run('tools/train.py', CONFIG, '--work-dir', train_dir, *_cfg_options(tiny_run_overrides))
    checkpoint = train_dir / 'iter_2.pth'
    assert checkpoint.is_file()
    assert (train_dir / 'last_checkpoint').read_text().strip() == str(checkpoint)

    _run('tools/test.py', CONFIG, checkpoint, '--work-dir', test_dir,
         *_cfg_options(tiny_run_overrides))
    # mmseg's test.py leaves the metrics in work_dir/TIMESTAMP/TIMESTAMP.json.
    results = [json.loads(p.read_text()) for p in test_dir.glob('*/*.json')]
    assert len(results) == 1
    assert 0.0 <= results[0]['mIoU'] <= 100.0
