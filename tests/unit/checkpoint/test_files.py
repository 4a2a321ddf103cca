"""A checkpoint sealed by the previous version opens (with a warning) and upgrades in place.

``tests/fixtures/sealed_v2/`` was written by the landed main before this package
and the manifest existed (its README says how); the bytes on disk are the
compatibility promise.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from mmengine.model import ExponentialMovingAverage

from mmseg_keyprotect.checkpoint import (MANIFEST_KEY, EncryptedWeightsError, find_checkpoint,
                                         safe_torch_load, sealing, upgrade_file, verify_file)
from mmseg_keyprotect.engine import hooks as hooks_module
from mmseg_keyprotect.keys import SecretKey

from ..engine.test_hooks import fake_runner, resume, tiny_model

FIXTURE = Path(__file__).resolve().parents[2] / 'fixtures' / 'sealed_v2'


@pytest.fixture(scope='module')
def fixture_key() -> SecretKey:
    return SecretKey(bytes.fromhex((FIXTURE / 'test_key.hex').read_text().strip()))


@pytest.fixture(scope='module')
def expected():
    return torch.load(FIXTURE / 'expected.pt', weights_only=True)


def _open(path: Path, key: SecretKey, tmp_path: Path):
    """Load ``path`` as ``Runner.resume`` does into a fresh model; (model, optimizer, checkpoint)."""
    model = tiny_model(key, seed=11)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    checkpoint = safe_torch_load(str(path), 'cpu')
    resume(fake_runner(model, tmp_path), optimizer, checkpoint)
    return model, optimizer, checkpoint


def _assert_same_model(model, optimizer, checkpoint, expected):
    with torch.no_grad():
        assert torch.equal(model(expected['inputs'], mode='tensor'), expected['outputs'])
    with sealing():
        state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in expected['state_dict'].items())
    assert all(torch.equal(optimizer.state[p]['momentum_buffer'], m)
               for p, m in zip(model.parameters(), expected['momentum']))
    ema = ExponentialMovingAverage(model)
    ema.load_state_dict(checkpoint['ema_state_dict'])  # its model group opens in the EMA copy
    assert torch.equal(ema.module.backbone.stem[0].weight, expected['state_dict'][
        'backbone.stem.0.weight'])


def test_a_checkpoint_of_the_previous_version_opens_with_a_warning(fixture_key, expected,
                                                                    tmp_path, monkeypatch):
    logged = []
    monkeypatch.setattr(hooks_module, 'print_log', lambda msg, **kw: logged.append(msg))
    model, optimizer, checkpoint = _open(FIXTURE / 'iter_4.ckpt', fixture_key, tmp_path)
    _assert_same_model(model, optimizer, checkpoint, expected)
    assert [m for m in logged if 'without a file manifest' in m and '\n' not in m]


def test_upgrade_writes_a_manifest_in_place_and_the_file_opens_the_same(fixture_key, expected,
                                                                        tmp_path, monkeypatch):
    path = tmp_path / 'iter_4.pth'
    shutil.copy(FIXTURE / 'iter_4.ckpt', path)
    assert upgrade_file(path, fixture_key)
    assert not upgrade_file(path, fixture_key)  # already upgraded: left as it is
    assert not [p for p in tmp_path.iterdir() if p.name.startswith('.')]  # no temporary left
    manifest = verify_file(safe_torch_load(str(path), 'cpu'), fixture_key)
    assert manifest['run'] == 'sealed_v2_fixture' and manifest['iter'] == 4
    logged = []
    monkeypatch.setattr(hooks_module, 'print_log', lambda msg, **kw: logged.append(msg))
    model, optimizer, checkpoint = _open(path, fixture_key, tmp_path)
    _assert_same_model(model, optimizer, checkpoint, expected)
    assert not [m for m in logged if 'manifest' in m]


def test_upgrade_with_another_key_leaves_the_file_untouched(tmp_path, other_key):
    path = tmp_path / 'iter_4.pth'
    shutil.copy(FIXTURE / 'iter_4.ckpt', path)
    before = path.read_bytes()
    with pytest.raises(EncryptedWeightsError, match='fingerprint'):
        upgrade_file(path, other_key)
    assert path.read_bytes() == before


def test_upgrade_refuses_a_tampered_file(fixture_key, tmp_path):
    checkpoint = safe_torch_load(str(FIXTURE / 'iter_4.ckpt'), 'cpu')
    checkpoint['optimizer']['state'][0]['momentum_buffer'].view(-1).view(torch.uint8)[0] ^= 1
    path = tmp_path / 'iter_4.pth'
    torch.save(checkpoint, path)
    with pytest.raises(EncryptedWeightsError, match='failed authentication'):
        upgrade_file(path, fixture_key)
    assert MANIFEST_KEY not in safe_torch_load(str(path), 'cpu')['meta']


def test_find_checkpoint_takes_the_highest_iteration(tmp_path):
    for name in ('iter_2.pth', 'iter_10.pth', 'best_mIoU_iter_2.pth', 'best_mIoU_iter_10.pth'):
        (tmp_path / name).write_bytes(b'')
    assert find_checkpoint(tmp_path, 'last').endswith('iter_10.pth')
    assert find_checkpoint(tmp_path, 'best').endswith('best_mIoU_iter_10.pth')
    with pytest.raises(FileNotFoundError, match=r'no iter_\*\.pth'):
        find_checkpoint(tmp_path / 'empty', 'last')
    with pytest.raises(ValueError, match='which'):
        find_checkpoint(tmp_path, 'first')
