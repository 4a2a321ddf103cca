"""No key material in a work_dir: train, test and visualise with mmseg's tools, then scan.

For each protection kind of the demo (block-wise encryption, SHF; feature-map
permutation, Model-6; the recommended six points with encrypted weights) a protected model is trained two iterations with mmseg's
``tools/train.py`` (validation and checkpoints at iteration 2), evaluated with
``tools/test.py`` under the key-condition test loop and drawn with
``tools/visualize_conditions.py``. Every file of the work_dir (dumped config,
logs, scalars, JSON, markdown, checkpoints and each member of their zip
archives, the figure and its decoded pixels) is scanned for the key in raw,
hex and base64 form and for what is derived from it (the block permutation and
its whole-image gather index, the channel permutation) as raw integers. The
scanner and its check that it finds planted material: ``tests/unit/test_no_key_leaks.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
import torch

from mmseg_keyprotect.checkpoint import META_KEY
from mmseg_keyprotect.keys import SecretKey, WeakKeyWarning
from mmseg_keyprotect.mmseg_tools import mmseg_tool
from tests.unit.test_no_key_leaks import SEED, blobs, secret_forms

REPO = Path(__file__).resolve().parents[2]
KINDS = {
    'shf-b2': REPO / 'configs' / 'demo' / 'fcn_r18-d8_shf-b2_demo.py',
    'perm-m6': REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6_demo.py',
    # the demo default: six permutation points and the weights encrypted with the key,
    # here read from an environment variable (ENV_CHILD)
    'perm-m1to6-encw': REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m1to6-encw_demo.py',
    # a published seed key (paper reproduction): the seed must not reach any file either
    'perm-m6-seedkey': REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6-seedkey_demo.py',
}
ENV_CHILD = '''_base_ = [{base!r}]
model = dict(protection=dict(key=dict(_delete_=True, env='KP_LEAK_KEY')))
'''
WORK_DIR = 'work_dirs/run'


def run(cmd: List[str], cwd: Path, **env_vars: str) -> None:
    env = {**os.environ, 'PYTHONWARNINGS': 'ignore', 'OMP_NUM_THREADS': '1', **env_vars}
    proc = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True, timeout=600, env=env)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]


def options(overrides: Dict[str, object]) -> List[str]:
    return ['--cfg-options', *(f'{k}={v}' for k, v in overrides.items())]


@pytest.fixture(scope='module', params=sorted(KINDS))
def work_dir(request, tmp_path_factory, tiny_run_overrides) -> Tuple[str, SecretKey, Path]:
    """(kind, key, work_dir) after train (2 iterations), test and visualisation."""
    kind, config = request.param, str(KINDS[request.param])
    cwd = tmp_path_factory.mktemp(f'leak_{kind}')
    key = SecretKey.generate()
    key.save(cwd / 'work_dirs' / 'demo' / 'owner.key')  # outside the scanned work_dir
    env = {'KP_LEAK_KEY': key.export_hex()}
    if kind == 'perm-m1to6-encw':
        config = str(cwd / Path(config).name)
        Path(config).write_text(ENV_CHILD.format(base=str(KINDS[kind])))
        (cwd / 'work_dirs' / 'demo' / 'owner.key').unlink()  # the key comes from the env only
    elif kind == 'perm-m6-seedkey':
        with pytest.warns(WeakKeyWarning):
            key = SecretKey.from_seed(SEED)
    data = {k: v for k, v in tiny_run_overrides.items() if 'dataloader.' in k}
    run([sys.executable, str(mmseg_tool('train.py')), config, '--work-dir', WORK_DIR,
         *options(tiny_run_overrides)], cwd, **env)
    checkpoint = f'{WORK_DIR}/iter_2.pth'
    # the repository's tools/test.py: mmseg's own ignores runner_type (KeyProtectedRunner)
    run([sys.executable, str(REPO / 'tools' / 'test.py'), config, checkpoint,
         '--work-dir', WORK_DIR, *options({**data, 'test_cfg.incorrect': 2})], cwd, **env)
    test_data = {'test_dataloader.dataset.data_root': data['test_dataloader.dataset.data_root']}
    run([sys.executable, str(REPO / 'tools' / 'visualize_conditions.py'), config, checkpoint,
         '--out', f'{WORK_DIR}/conditions.png', '--num-samples', '1', *options(test_data)], cwd,
        **env)
    return kind, key, cwd / WORK_DIR


def test_work_dir_has_every_kind_of_output(work_dir):
    kind, key, root = work_dir
    names = {p.name for p in root.rglob('*') if p.is_file()}
    assert {'iter_2.pth', 'best_mIoU_iter_2.pth', 'key_conditions.json', 'key_conditions.md',
            'conditions.png', Path(KINDS[kind]).name, 'scalars.json', 'config.py'} <= names
    assert any(name.endswith('.log') for name in names)
    checkpoint = torch.load(root / 'iter_2.pth', weights_only=False)
    assert {entry['key'] for entry in checkpoint['meta'][META_KEY]} == {key.fingerprint}


def test_no_key_material_in_any_file(work_dir):
    kind, key, root = work_dir
    forms = secret_forms(kind, key)
    scanned, found = 0, []
    for name, data in blobs(root):
        scanned += 1
        found += [f'{form} in {name}' for form, needle in forms.items() if needle in data]
    assert scanned >= 10
    assert not found, found
