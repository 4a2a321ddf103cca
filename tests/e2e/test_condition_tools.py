"""mmseg's own tools/train.py and tools/test.py with key-condition loops, 1 and 2 processes."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.mmseg_tools import mmseg_tool

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6_demo.py'


def run(cmd: list, cwd: Path, timeout: int = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1'}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=timeout, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


def data_options(data_root: Path) -> list:
    return [f'{split}.dataset.data_root={data_root}'
            for split in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


@pytest.fixture(scope='module')
def trained(tmp_path_factory, synthetic_voc):
    """The Model-6 demo config trained 4 iterations with mmseg's tools/train.py."""
    cwd = tmp_path_factory.mktemp('run')
    key = SecretKey.generate()
    key.save(cwd / 'work_dirs' / 'demo' / 'owner.key')
    data_root = synthetic_voc
    proc = run([sys.executable, str(mmseg_tool('train.py')), str(CONFIG), '--work-dir',
                'work_dirs/train', '--cfg-options', 'train_cfg.max_iters=4',
                'train_cfg.val_interval=4', 'default_hooks.checkpoint.interval=4',
                'train_dataloader.batch_size=2', *data_options(data_root)], cwd)
    return dict(cwd=cwd, key=key, data_root=data_root, train_log=proc.stdout + proc.stderr,
                checkpoint=cwd / 'work_dirs' / 'train' / 'iter_4.pth')


def test_val_loop_reports_correct_and_plain_during_training(trained):
    log = trained['train_log']
    assert 'plain/mIoU' in log
    assert trained['checkpoint'].is_file()
    assert list((trained['cwd'] / 'work_dirs' / 'train').glob('best_mIoU_iter_4.pth'))


def test_mmseg_test_tool_prints_and_writes_the_condition_table(trained):
    proc = run([sys.executable, str(mmseg_tool('test.py')), str(CONFIG),
                str(trained['checkpoint']), '--work-dir', 'work_dirs/test1',
                '--cfg-options', 'test_cfg.incorrect=4', *data_options(trained['data_root'])],
               trained['cwd'])
    out = proc.stdout + proc.stderr
    assert '| condition | aAcc | mIoU | mAcc |' in out
    assert '| incorrect (mean ± std [min, max], 4 keys) |' in out
    report = json.loads((trained['cwd'] / 'work_dirs' / 'test1' /
                         'key_conditions.json').read_text())
    assert report['summary']['incorrect']['num_keys'] == 4
    assert report['protection'][0]['key'] == trained['key'].fingerprint
    assert trained['key'].export_hex() not in out + json.dumps(report)


def test_ddp_two_processes_give_the_same_numbers(trained):
    common = [str(CONFIG), str(trained['checkpoint']), '--cfg-options', 'test_cfg.incorrect=4',
              *data_options(trained['data_root'])]
    run([sys.executable, str(mmseg_tool('test.py')), *common[:2], '--work-dir',
         'work_dirs/single', *common[2:]], trained['cwd'])
    run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         '--master_port=29513', str(mmseg_tool('test.py')), *common[:2], '--work-dir',
         'work_dirs/ddp', '--launcher', 'pytorch', *common[2:]], trained['cwd'])
    reports = [json.loads((trained['cwd'] / 'work_dirs' / name /
                           'key_conditions.json').read_text()) for name in ('single', 'ddp')]
    single, ddp = (r['per_condition'] for r in reports)
    assert single.keys() == ddp.keys() and len(single) == 6
    for label in single:
        for metric, value in single[label].items():
            assert ddp[label][metric] == pytest.approx(value, abs=1e-6), (label, metric)
    assert reports[1]['dataset_size'] == reports[0]['dataset_size'] == 4
