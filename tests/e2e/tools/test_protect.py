"""tools/protect.py end to end: train a plain model with mmseg's tools/train.py, protect it after
training, evaluate it with mmseg's tools/test.py; rekey it; refusals."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict, Tuple

import pytest

from mmseg_keyprotect.datasets import make_synthetic_voc
from mmseg_keyprotect.keys import SecretKey

REPO = Path(__file__).parents[3]
BASELINE = REPO / 'configs/demo/fcn_r18-d8_baseline_demo.py'
ITERS = 150


def _run(*args: Any, ok: bool = True) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONWARNINGS='ignore')
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env,
                          capture_output=True, text=True, timeout=1800)
    if ok:
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc


def _user_config(tmp_path: Path, data_root: Path, iters: int = ITERS) -> Path:
    """The plain config a user trained with: the demo baseline on the generated data."""
    loaders = '\n'.join(
        f"{loader} = dict(num_workers=0, persistent_workers=False, "
        f"dataset=dict(data_root={str(data_root)!r}))"
        for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader'))
    path = tmp_path / 'plain_config.py'
    path.write_text(f"_base_ = [{str(BASELINE)!r}]\n"
                    f"train_cfg = dict(max_iters={iters}, val_interval={iters})\n"
                    f"default_hooks = dict(checkpoint=dict(interval={iters}))\n{loaders}\n")
    return path


def _miou(work_dir: Path) -> Dict[str, Any]:
    return json.loads((work_dir / 'key_conditions.json').read_text())['summary']


def _train_and_test_plain(tmp_path: Path, extra: str = '',
                          iters: int = ITERS) -> Tuple[Path, Path, Path, float]:
    """Train a plain model (the demo baseline, plus ``extra`` config text) on generated data
    with mmseg's tools/train.py and test it with tools/test.py.

    Returns:
        (config, checkpoint, key_file, mIoU): a fresh owner key, and the plain model's mIoU
        (an unprotected model has the correct condition only).
    """
    data_root = make_synthetic_voc(tmp_path / 'data', num_train=64, num_val=16, num_test=16,
                                   seed=0)
    config = _user_config(tmp_path, data_root, iters)
    config.write_text(config.read_text() + extra)
    _run('tools/train.py', config, '--work-dir', tmp_path / 'train')
    checkpoint = tmp_path / 'train' / f'iter_{iters}.pth'
    key_file = SecretKey.generate().save(tmp_path / 'owner.key')
    _run('tools/test.py', config, checkpoint, '--work-dir', tmp_path / 'plain_test')
    plain = [json.loads(p.read_text()) for p in (tmp_path / 'plain_test').glob('*/*.json')]
    return config, checkpoint, key_file, plain[0]['correct/mIoU']


def _assert_protected(summary: Dict[str, Any], plain_miou: float, at_least: float) -> None:
    """Correct key = the plain model (same mIoU); plain and wrong keys lose half or more."""
    assert summary['correct']['mIoU'] == pytest.approx(plain_miou, abs=0.011)
    assert plain_miou > at_least
    assert summary['plain']['mIoU'] < plain_miou / 2
    assert summary['incorrect']['mean']['mIoU'] < plain_miou / 2


@pytest.mark.slow
def test_train_protect_test_rekey(tmp_path: Path):
    config, checkpoint, key_file, plain_miou = _train_and_test_plain(tmp_path)

    out = tmp_path / 'protected'
    proc = _run('tools/protect.py', config, checkpoint, '--key', key_file, '--out', out,
                '--incorrect', '5')
    assert 'max |logit difference|' in proc.stdout
    written = (out / 'protected_config.py').read_text()
    assert str(key_file) in written and key_file.read_text().strip() not in written
    assert (out / 'key_conditions' / 'key_conditions.json').is_file()

    _run('tools/test.py', out / 'protected_config.py', out / 'protected.pth', '--work-dir',
         tmp_path / 'protected_test', '--cfg-options', 'test_cfg.incorrect=5')
    summary = _miou(tmp_path / 'protected_test')
    _assert_protected(summary, plain_miou, at_least=40)

    # the checkpoint holds no plaintext weight; the old key fails after rekeying
    new_key = SecretKey.generate().save(tmp_path / 'new.key')
    rekeyed = tmp_path / 'rekeyed'
    _run('tools/protect.py', 'rekey', out / 'protected_config.py', out / 'protected.pth',
         '--key', key_file, '--new-key', new_key, '--out', rekeyed, '--no-eval')
    _run('tools/test.py', rekeyed / 'protected_config.py', rekeyed / 'protected.pth',
         '--work-dir', tmp_path / 'rekeyed_test', '--cfg-options', 'test_cfg.incorrect=2')
    assert _miou(tmp_path / 'rekeyed_test')['correct']['mIoU'] == pytest.approx(
        summary['correct']['mIoU'], abs=0.011)
    old = _run('tools/test.py', rekeyed / 'protected_config.py', rekeyed / 'protected.pth',
               '--work-dir', tmp_path / 'old_key_test', '--cfg-options',
               f"model.protection.key.file={key_file}", ok=False)
    assert old.returncode != 0 and 'fingerprint' in (old.stdout + old.stderr)


def test_block_cipher_rekey_is_refused_in_one_line(tmp_path: Path):
    key_file = SecretKey.generate().save(tmp_path / 'owner.key')
    new_key = SecretKey.generate().save(tmp_path / 'new.key')
    proc = _run('tools/protect.py', 'rekey', REPO / 'configs/demo/fcn_r18-d8_shf-b2_demo.py',
                tmp_path / 'missing.pth', '--key', key_file, '--new-key', new_key, '--out',
                tmp_path / 'out', ok=False)
    assert proc.returncode == 1
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and 'BlockShuffle (block size 2)' in lines[0]
    assert 'without retraining' in lines[0]
    assert not (tmp_path / 'out').exists()


# A tiny ViT (2 layers, 64 dims, 16x16 patches) at the generated data's 64x64: its img_size,
# so block scrambling is exact (whole inference; the test pipeline keeps 64x64).
_TINY_VIT = """
model = dict(
    _delete_=True, type='EncoderDecoder',
    data_preprocessor=dict(type='SegDataPreProcessor', mean=[123.675, 116.28, 103.53],
                           std=[58.395, 57.12, 57.375], bgr_to_rgb=True, pad_val=0,
                           seg_pad_val=255, size=(64, 64)),
    backbone=dict(type='VisionTransformer', img_size=(64, 64), patch_size=16, embed_dims=64,
                  num_layers=2, num_heads=2, mlp_ratio=2, out_indices=(1, ), final_norm=True,
                  with_cls_token=True),
    decode_head=dict(type='FCNHead', in_channels=64, channels=32, num_convs=1, num_classes=6,
                     in_index=0, concat_input=False, dropout_ratio=0.0,
                     loss_decode=dict(type='CrossEntropyLoss', loss_weight=1.0)),
    train_cfg=dict(), test_cfg=dict(mode='whole'))
optim_wrapper = dict(_delete_=True, type='OptimWrapper',
                     optimizer=dict(type='AdamW', lr=1e-3, weight_decay=0.01))
param_scheduler = []
"""
VIT_ITERS = 200


@pytest.mark.slow
def test_train_vit_protect_with_block_scrambling_test(tmp_path: Path):
    """The spatial head (a 3x3 conv) sees the tokens back in place: correct = the plain mIoU."""
    config, checkpoint, key_file, plain_miou = _train_and_test_plain(tmp_path, _TINY_VIT,
                                                                     VIT_ITERS)

    out = tmp_path / 'protected'
    proc = _run('tools/protect.py', config, checkpoint, '--key', key_file, '--out', out,
                '--method', 'patch-embedding', '--cipher', 'BlockScramble+BlockShuffle',
                '--no-eval')
    assert 'backbone.pos_embed' in proc.stdout
    _run('tools/test.py', out / 'protected_config.py', out / 'protected.pth', '--work-dir',
         tmp_path / 'protected_test', '--cfg-options', 'test_cfg.incorrect=5')
    _assert_protected(_miou(tmp_path / 'protected_test'), plain_miou, at_least=25)
