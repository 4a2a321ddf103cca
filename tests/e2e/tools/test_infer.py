"""tools/infer.py: palette PNGs and overlays under correct / plain / incorrect key, key errors."""
from __future__ import annotations

import sys
import warnings
from pathlib import Path
from typing import Any, Dict, List

import numpy as np
import pytest
import torch
from mmengine.config import Config
from PIL import Image

from mmseg_keyprotect.datasets.synthetic import PALETTE
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.protection.conditions import KeyCondition, make_conditions
from mmseg_keyprotect.protection import Protection

REPO = Path(__file__).resolve().parents[3]
CONFIG = REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6_demo.py'
sys.path.insert(0, str(REPO / 'tools'))

import infer  # noqa: E402


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_run_overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The Model-6 demo config trained 2 iterations, in a cwd holding its key file.

    Two iterations predict background everywhere under any key; the classifier
    (``decode_head.conv_seg``, whose input is the permuted point) is then given random
    weights so that predictions vary over the image and depend on the permutation.
    """
    from mmengine.runner import Runner
    from mmengine.runner import CheckpointLoader
    cwd = tmp_path_factory.mktemp('infer')
    key = SecretKey.generate()
    key.save(cwd / 'work_dirs' / 'demo' / 'owner.key')  # the path the config names
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict(tiny_run_overrides)
    cfg.work_dir = str(cwd / 'train')
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        Runner.from_cfg(cfg).train()
    checkpoint = cwd / 'train' / 'iter_2.pth'
    state = CheckpointLoader.load_checkpoint(str(checkpoint), map_location='cpu')  # weights-only
    weight = state['state_dict']['decode_head.conv_seg.weight']
    weight.copy_(torch.randn(weight.shape, generator=torch.Generator().manual_seed(0)))
    state['state_dict']['decode_head.conv_seg.bias'].zero_()
    torch.save(state, checkpoint)
    images = sorted((Path(tiny_run_overrides['test_dataloader.dataset.data_root']) /
                     'JPEGImages').glob('val_*.jpg'))[:2]
    return dict(cwd=cwd, key=key, checkpoint=str(checkpoint), images=images)


def run_infer(trained: Dict[str, Any], out: Path, *extra: str, images=None) -> int:
    argv = [str(p) for p in images or trained['images']]
    return infer.main([*argv, '--config', str(CONFIG), '--checkpoint', trained['checkpoint'],
                       '--out', str(out), *extra])


def predictions(out: Path) -> List[np.ndarray]:
    return [np.asarray(Image.open(p)) for p in sorted((out / 'pred').glob('*.png'))]


def reference(trained: Dict[str, Any], condition: KeyCondition) -> List[np.ndarray]:
    """Label maps from mmseg's init_model / inference_model under ``condition``."""
    from mmseg.apis import inference_model, init_model
    cfg = Config.fromfile(str(CONFIG))
    cfg.model.protection.key = trained['key']
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = init_model(cfg, trained['checkpoint'], device='cpu')
    with Protection.of(model).applied(condition):
        return [inference_model(model, str(image)).pred_sem_seg.data[0].numpy()
                for image in trained['images']]


@pytest.fixture(scope='module')
def correct_out(trained, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp('correct')
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(trained['cwd'])
        pattern = trained['images'][0].parent / 'val_0000[01].jpg'  # a glob
        assert run_infer(trained, out, images=[pattern]) == 0
    return out


def test_writes_palette_pngs_and_overlays(trained, correct_out):
    assert all(np.array_equal(a, b) for a, b in
               zip(predictions(correct_out), reference(trained, KeyCondition.correct())))
    for image in trained['images']:
        size = Image.open(image).size
        pred = Image.open(correct_out / 'pred' / f'{image.stem}.png')
        assert pred.mode == 'P' and pred.size == size
        assert pred.getpalette()[:3 * len(PALETTE)] == [c for rgb in PALETTE for c in rgb]
        assert np.asarray(pred).max() < len(PALETTE)
        vis = Image.open(correct_out / 'vis' / f'{image.stem}.png')
        assert vis.size == size
        # the overlay is the image with the prediction drawn over it, not the image itself
        assert not np.array_equal(np.asarray(vis.convert('RGB')),
                                  np.asarray(Image.open(image).convert('RGB')))


def test_plain_needs_no_key_and_differs_from_correct(trained, correct_out, tmp_path,
                                                     monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # no work_dirs/demo/owner.key here
    assert run_infer(trained, tmp_path / 'plain', '--condition', 'plain') == 0
    plain, correct = predictions(tmp_path / 'plain'), predictions(correct_out)
    assert len(plain) == len(correct) == 2
    assert any(not np.array_equal(p, c) for p, c in zip(plain, correct))
    expected = reference(trained, KeyCondition.plain())
    assert all(np.array_equal(a, b) for a, b in zip(plain, expected))
    assert 'plain: wrote 2' in capsys.readouterr().out


def test_incorrect_key_is_seeded_and_differs_from_correct(trained, correct_out, tmp_path,
                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    for name in ('a', 'b'):
        assert run_infer(trained, tmp_path / name, '--condition', 'incorrect', '--seed', '3') == 0
    first, second = predictions(tmp_path / 'a'), predictions(tmp_path / 'b')
    assert all(np.array_equal(a, b) for a, b in zip(first, second))
    assert any(not np.array_equal(a, c) for a, c in zip(first, predictions(correct_out)))
    wrong = make_conditions(correct=False, plain=False, incorrect=1, seed=3)[0]
    assert all(np.array_equal(a, b) for a, b in zip(first, reference(trained, wrong)))


def test_key_env_replaces_the_config_key(trained, correct_out, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # the config's key file is not here: --key-env must be used
    monkeypatch.setenv('KP_TEST_INFER_KEY', trained['key'].export_hex())
    assert run_infer(trained, tmp_path / 'env', '--key-env', 'KP_TEST_INFER_KEY') == 0
    assert all(np.array_equal(a, b)
               for a, b in zip(predictions(tmp_path / 'env'), predictions(correct_out)))


def error_of(capsys) -> str:
    err = capsys.readouterr().err
    assert 'Traceback' not in err
    lines = [line for line in err.splitlines() if line.startswith('infer.py: error:')]
    assert len(lines) == 1, err
    return lines[0]


def test_missing_key_file(trained, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert run_infer(trained, tmp_path / 'out', images=trained['images'][:1]) == 1
    message = error_of(capsys)
    assert 'model.protection.key' in message
    assert "'work_dirs/demo/owner.key' does not exist" in message
    assert not (tmp_path / 'out').exists()


def test_world_readable_key_file(trained, tmp_path, capsys):
    key_file = trained['key'].save(tmp_path / 'readable.key')
    key_file.chmod(0o644)
    assert run_infer(trained, tmp_path / 'out', '--key', str(key_file)) == 1
    message = error_of(capsys)
    assert 'which let others in' in message and 'readable.key' in message


def test_wrong_key_shows_both_fingerprints(trained, tmp_path, capsys):
    other = SecretKey.generate()
    key_file = other.save(tmp_path / 'other.key')
    assert run_infer(trained, tmp_path / 'out', '--key', str(key_file)) == 1
    message = error_of(capsys)
    assert other.fingerprint in message and trained['key'].fingerprint in message
    assert other.export_hex() not in message and trained['key'].export_hex() not in message
    assert not (tmp_path / 'out').exists()


def test_checkpoint_without_protection_meta_warns_and_runs(trained, tmp_path, capsys):
    from mmengine.runner import CheckpointLoader
    checkpoint = CheckpointLoader.load_checkpoint(trained['checkpoint'], map_location='cpu')
    del checkpoint['meta']['key_protection']
    bare = tmp_path / 'bare.pth'
    torch.save(checkpoint, bare)
    key_file = trained['key'].save(tmp_path / 'owner.key')
    assert infer.main([str(trained['images'][0]), '--config', str(CONFIG), '--checkpoint',
                       str(bare), '--out', str(tmp_path / 'out'), '--key', str(key_file)]) == 0
    assert "has no 'key_protection' meta" in capsys.readouterr().err
    assert (tmp_path / 'out' / 'pred' / f"{trained['images'][0].stem}.png").is_file()


def test_encrypted_weights_correct_key_and_plain_without_key(tmp_path, tiny_run_overrides,
                                                             monkeypatch):
    """With protection.encrypt_weights the checkpoint holds encrypted tensors: the key
    holder's outputs are unchanged, and plain use without a key runs on the stored
    (encrypted) weights instead of failing."""
    from mmengine.runner import Runner
    from mmengine.runner import CheckpointLoader
    config = tmp_path / 'encrypted.py'
    config.write_text(f"_base_ = ['{CONFIG}']\n"
                      "model = dict(protection=dict(encrypt_weights=True))\n")
    SecretKey.generate().save(tmp_path / 'work_dirs' / 'demo' / 'owner.key')
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(str(config))
    cfg.merge_from_dict(tiny_run_overrides)
    cfg.work_dir = str(tmp_path / 'train')
    Runner.from_cfg(cfg).train()
    checkpoint = tmp_path / 'train' / 'iter_2.pth'
    assert 'keyprotect_encryption' in CheckpointLoader.load_checkpoint(str(checkpoint))['state_dict']
    image = sorted((Path(tiny_run_overrides['test_dataloader.dataset.data_root']) /
                    'JPEGImages').glob('val_*.jpg'))[0]
    common = [str(image), '--config', str(config), '--checkpoint', str(checkpoint)]
    assert infer.main([*common, '--out', str(tmp_path / 'correct')]) == 0
    (tmp_path / 'work_dirs' / 'demo' / 'owner.key').unlink()  # a thief has no key file
    assert infer.main([*common, '--condition', 'plain', '--out', str(tmp_path / 'plain')]) == 0
    assert predictions(tmp_path / 'correct')[0].shape == predictions(tmp_path / 'plain')[0].shape
