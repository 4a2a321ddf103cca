"""tools/train.py and tools/test.py: mmseg's own tools, run end to end in a subprocess."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, List

REPO = Path(__file__).parents[3]
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
    # mmseg's test.py leaves the metrics in work_dir/TIMESTAMP/TIMESTAMP.json; the demo
    # configs test under key conditions (an unprotected model: the correct condition only).
    results = [json.loads(p.read_text()) for p in test_dir.glob('*/*.json')]
    assert len(results) == 1
    assert 0.0 <= results[0]['correct/mIoU'] <= 100.0
    assert not any(k.startswith(('plain/', 'incorrect/')) for k in results[0])
    report = json.loads((test_dir / 'key_conditions.json').read_text())
    assert report['summary']['correct']['mIoU'] == results[0]['correct/mIoU']


def test_dist_train_two_cpu_processes(tmp_path: Path, tiny_run_overrides: Dict[str, Any]):
    """tools/dist_train.sh with 2 gloo processes trains, validates and saves a checkpoint."""
    work_dir = tmp_path / 'ddp'
    env = dict(os.environ, PYTHONWARNINGS='ignore', PYTHON=sys.executable, PORT='29531',
               OMP_NUM_THREADS='1')
    proc = subprocess.run(['bash', 'tools/dist_train.sh', CONFIG, '2', '--work-dir',
                           str(work_dir), *_cfg_options(tiny_run_overrides)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert (work_dir / 'iter_2.pth').is_file()
    assert 'Iter(val)' in out and 'mIoU' in out
    assert 'Distributed training: True' in out and 'GPU number: 2' in out  # 2 ranks


def test_dist_train_with_the_preprocessor_cipher(tmp_path: Path,
                                                tiny_run_overrides: Dict[str, Any]):
    """2 gloo ranks train with BlockCipherSegDataPreProcessor; the checkpoint records it."""
    from mmengine.runner import CheckpointLoader  # the plugin's weights-only loader (compat)

    from mmseg_keyprotect.keys import SecretKey
    key = SecretKey.generate()
    key_file = key.save(tmp_path / 'owner.key')
    work_dir = tmp_path / 'ddp'
    env = dict(os.environ, PYTHONWARNINGS='ignore', PYTHON=sys.executable, PORT='29533',
               OMP_NUM_THREADS='1', KP_DEMO_KEY_FILE=str(key_file))
    proc = subprocess.run(['bash', 'tools/dist_train.sh',
                           'configs/demo/fcn_r18-d8_shf-b2-preproc_demo.py', '2', '--work-dir',
                           str(work_dir), *_cfg_options(tiny_run_overrides)],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out[-5000:]
    assert 'GPU number: 2' in out and 'plain/mIoU' in out
    meta = CheckpointLoader.load_checkpoint(str(work_dir / 'iter_2.pth'),
                                            map_location='cpu')['meta']
    assert meta['key_protection'] == [
        {'block_size': 2, 'key': key.fingerprint, 'type': 'BlockShuffle'}]
