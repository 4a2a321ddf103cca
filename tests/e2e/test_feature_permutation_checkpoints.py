"""Feature-permutation configs, check (c): a checkpoint reproduces the outputs in a fresh process.

With the key the fresh process gives the same outputs; the unprotected model with
the checkpoint gives the plain outputs. Checks (a), (b), (d) and (e), the
expectations and the helpers: ``tests/unit/configs/test_feature_permutation_configs.py``.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.runner import Runner, save_checkpoint
from torch import Tensor, nn

from mmseg_keyprotect.keys import SecretKey
from tests.unit.configs.test_feature_permutation_configs import (CONFIGS, KEY_ENV, SIZE, build,
                                                                  fcn, forward, load_model_cfg,
                                                                  set_condition, unprotect)

REPO = Path(__file__).resolve().parents[2]
DEMO_CONFIG = REPO / 'configs' / 'demo' / 'fcn_r18-d8_baseline_demo.py'


# Builds each config's model (the key comes from the environment), loads the
# checkpoint with mmengine's loader and saves the outputs on the given input.
_FRESH_PROCESS = '''
import sys, torch
from mmengine.config import Config
from mmengine.runner import load_checkpoint
import mmseg_keyprotect
from mmseg.registry import MODELS
protected_cfg, unprotected_cfg, inputs, checkpoint, out = sys.argv[1:]
x = torch.load(inputs)
outs = []
for cfg_file in (protected_cfg, unprotected_cfg):
    model = MODELS.build(Config.fromfile(cfg_file).model).eval()
    load_checkpoint(model, checkpoint, map_location='cpu', strict=True)
    with torch.no_grad():
        outs.append(model(x, mode='tensor'))
torch.save(outs, out)
'''


def outputs_in_fresh_process(protected_cfg: Path, model_cfg: dict, checkpoint: Path, x: Tensor,
                             key: SecretKey, tmp_path: Path) -> Tuple[Tensor, Tensor]:
    """Outputs on ``x`` of the protected config and of ``model_cfg`` unprotected, in a new process.

    Both load ``checkpoint``; the protected one gets ``key`` through the environment.
    """
    unprotected_cfg, inputs, out = (tmp_path / n for n in ('unprotected.py', 'x.pt', 'out.pt'))
    Config(dict(model=unprotect(model_cfg))).dump(unprotected_cfg)
    torch.save(x, inputs)
    env = dict(os.environ, PYTHONWARNINGS='ignore', **{KEY_ENV: key.export_hex()})
    result = subprocess.run([sys.executable, '-c', _FRESH_PROCESS] +
                            [str(p) for p in (protected_cfg, unprotected_cfg, inputs, checkpoint,
                                              out)],
                            cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    correct, unprotected = torch.load(out)
    return correct, unprotected


def outputs_by_condition(model: nn.Module, key: SecretKey, x: Tensor) -> Tuple[Tensor, Tensor]:
    """Outputs of ``model`` on ``x`` with the correct key and plain."""
    correct = forward(model, x)
    set_condition(model, None)
    plain = forward(model, x)
    set_condition(model, key)
    return correct, plain


@pytest.mark.parametrize(
    'name', [pytest.param(n, marks=() if n == fcn(1) else pytest.mark.slow) for n in CONFIGS])
def test_c_checkpoint_reproduces_outputs_in_a_fresh_process(name, tmp_path, key):
    """Correct key: same outputs; unprotected model with the checkpoint: the plain outputs."""
    torch.manual_seed(0)
    model_cfg = load_model_cfg(name)
    model = build(model_cfg, key).eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    checkpoint = tmp_path / 'ckpt.pth'
    save_checkpoint(dict(state_dict=model.state_dict(), meta=dict()), str(checkpoint))
    protected_cfg = tmp_path / 'protected.py'
    Config(dict(model=model_cfg)).dump(protected_cfg)
    fresh = outputs_in_fresh_process(protected_cfg, model_cfg, checkpoint, x, key, tmp_path)
    for got, expected in zip(fresh, outputs_by_condition(model, key, x)):
        assert torch.equal(got, expected)


def test_c_runner_checkpoint_in_a_fresh_process(tmp_path, key, monkeypatch, tiny_run_overrides):
    """Train the demo FCN with Model-1 and Model-6 points through mmengine's Runner, then
    reload its dumped config and checkpoint elsewhere; the work_dir holds no key material."""
    monkeypatch.setenv(KEY_ENV, key.export_hex())
    work_dir = tmp_path / 'run'
    cfg = Config.fromfile(DEMO_CONFIG)
    cfg.merge_from_dict(tiny_run_overrides)
    cfg.merge_from_dict({
        'work_dir': str(work_dir),
        'model.type': 'KeyProtectedEncoderDecoder',
        'model.protection': dict(key=dict(env=KEY_ENV),
                                 points=['backbone.layer1:input', 'decode_head.conv_seg:input']),
    })
    runner = Runner.from_cfg(cfg)
    runner.train()
    model = runner.model.eval()
    x = torch.randn(1, 3, SIZE, SIZE)
    expected = outputs_by_condition(model, key, x)
    assert not torch.equal(*expected)

    dumped, checkpoint = work_dir / DEMO_CONFIG.name, work_dir / 'iter_2.pth'
    leaks = (key.export_hex().encode(), bytes.fromhex(key.export_hex()))
    for path in work_dir.rglob('*'):
        if path.is_file():
            data = path.read_bytes()
            assert not any(leak in data for leak in leaks), f'key material in {path}'
    model_cfg = Config.fromfile(dumped).model.to_dict()
    fresh = outputs_in_fresh_process(dumped, model_cfg, checkpoint, x, key, tmp_path)
    for got, want in zip(fresh, expected):
        assert torch.equal(got, want)
