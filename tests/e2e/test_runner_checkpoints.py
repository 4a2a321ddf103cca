"""mmengine's Runner checkpoints through the weights-only loader: load, resume and test.

The loader itself (what it refuses): ``tests/unit/checkpoint/test_safe_load.py``; the
fixture ``_load`` (both loading paths) is in ``tests/conftest.py``.
"""
from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from mmengine.config import Config
from mmengine.logging.history_buffer import HistoryBuffer
from mmengine.runner import CheckpointLoader, Runner

REPO = Path(__file__).parents[2]
CONFIG = REPO / 'configs' / 'demo' / 'fcn_r18-d8_baseline_demo.py'

# Run in a fresh interpreter that never imports mmseg_keyprotect itself: the
# loader must come from the config's custom_imports alone.
RESUME_AND_TEST = '''
import json, sys
from mmengine.config import Config
from mmengine.runner import Runner

config, work_dir, overrides = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
cfg = Config.fromfile(config)
cfg.merge_from_dict(overrides)
cfg.merge_from_dict({'train_cfg.max_iters': 3, 'work_dir': work_dir, 'resume': True})
runner = Runner.from_cfg(cfg)
runner.train()
resumed_iter = runner.iter

cfg = Config.fromfile(config)
cfg.merge_from_dict(overrides)
cfg.merge_from_dict({'work_dir': work_dir + '/test', 'experiment_name': 'test',
                     'load_from': work_dir + '/iter_3.pth'})
metrics = Runner.from_cfg(cfg).test()
print('RESULT ' + json.dumps({'iter': resumed_iter, 'mIoU': float(metrics['correct/mIoU'])}))
'''


@pytest.fixture(scope='module')
def trained_work_dir(tmp_path_factory: pytest.TempPathFactory,
                     tiny_run_overrides: Dict[str, Any]) -> Path:
    """A work_dir where mmengine's Runner trained the demo model for 2 iterations."""
    work_dir = tmp_path_factory.mktemp('checkpoint_run')
    cfg = Config.fromfile(CONFIG)
    cfg.merge_from_dict(tiny_run_overrides)
    cfg.work_dir = str(work_dir)
    Runner.from_cfg(cfg).train()
    assert (work_dir / 'iter_2.pth').is_file()
    return work_dir


@pytest.mark.skipif(tuple(int(v) for v in torch.__version__.split('.')[:2]) < (2, 6),
                    reason='torch < 2.6 loads with weights_only=False by default')
def test_runner_checkpoint_needs_the_allowlist(trained_work_dir: Path, _load):
    with pytest.raises(pickle.UnpicklingError, match='HistoryBuffer'):
        torch.load(trained_work_dir / 'iter_2.pth', map_location='cpu')
    checkpoint = _load(trained_work_dir / 'iter_2.pth')
    assert checkpoint['meta']['iter'] == 2
    assert isinstance(checkpoint['message_hub']['log_scalars']['train/loss'], HistoryBuffer)


def test_resume_and_test_in_a_fresh_process(trained_work_dir: Path,
                                            tiny_run_overrides: Dict[str, Any]):
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run(
        [sys.executable, '-c', RESUME_AND_TEST, str(CONFIG), str(trained_work_dir),
         json.dumps(tiny_run_overrides)],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(proc.stdout.split('RESULT ', 1)[1].splitlines()[0])
    assert result['iter'] == 3
    assert 0.0 <= result['mIoU'] <= 100.0
    assert 'Loads checkpoint by local_weights_only backend' in proc.stdout + proc.stderr
    assert CheckpointLoader.load_checkpoint(str(trained_work_dir / 'iter_3.pth'))['meta']['iter'] \
        == 3
