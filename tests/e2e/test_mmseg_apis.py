"""mmseg's own inference APIs work unchanged on protected models (key from the config)."""
from __future__ import annotations

import copy
import os
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any, Dict

import numpy as np
import pytest
from mmengine.config import Config
from PIL import Image

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.protection.conditions import KeyCondition
from mmseg_keyprotect.protection import Protection

REPO = Path(__file__).resolve().parents[2]
CONFIGS = {
    'block cipher': REPO / 'configs' / 'demo' / 'fcn_r18-d8_shf-b2_demo.py',
    'permutation': REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6_demo.py',
}


@pytest.fixture(scope='module', params=sorted(CONFIGS))
def trained(request, tmp_path_factory, tiny_run_overrides: Dict[str, Any]) -> Dict[str, Any]:
    """A demo config trained 2 iterations with tools/train.py, in a cwd holding its key."""
    cwd = tmp_path_factory.mktemp('apis')
    SecretKey.generate().save(cwd / 'work_dirs' / 'demo' / 'owner.key')
    options = [f'{k}={v}' for k, v in tiny_run_overrides.items()]
    proc = subprocess.run([sys.executable, str(REPO / 'tools' / 'train.py'),
                           str(CONFIGS[request.param]), '--work-dir', str(cwd / 'train'),
                           '--cfg-options', *options], cwd=cwd, capture_output=True, text=True,
                          env=dict(os.environ, PYTHONWARNINGS='ignore'), timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    cfg = Config.fromfile(str(CONFIGS[request.param]))
    cfg.merge_from_dict(tiny_run_overrides)
    image_dir = Path(tiny_run_overrides['test_dataloader.dataset.data_root']) / 'JPEGImages'
    return dict(cwd=cwd, cfg=cfg, checkpoint=str(cwd / 'train' / 'iter_2.pth'),
                image=str(sorted(image_dir.glob('val_*.jpg'))[0]))


@pytest.fixture
def in_cwd(trained, monkeypatch):
    monkeypatch.chdir(trained['cwd'])  # the config names work_dirs/demo/owner.key
    # mmseg's inference_model edits cfg.test_pipeline in place: give each test its own.
    return {**trained, 'cfg': copy.deepcopy(trained['cfg'])}


def test_init_model_and_inference_model(in_cwd):
    from mmseg.apis import inference_model, init_model
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = init_model(in_cwd['cfg'], in_cwd['checkpoint'], device='cpu')
    image = np.array(Image.open(in_cwd['image']))[..., ::-1].copy()  # BGR, like mmcv
    correct = inference_model(model, image).seg_logits.data
    # inference_model builds cfg.test_pipeline: for the cipher that is where the key acts.
    keyed = Protection.of(model).parts
    with Protection.of(model).applied(KeyCondition.plain()):
        if keyed:  # permutation: plain means no permutation inside the model
            plain = inference_model(model, image).seg_logits.data
        else:  # cipher: plain means the image is not encrypted
            test_pipeline = in_cwd['cfg'].test_pipeline
            cfg = in_cwd['cfg'].copy()
            cfg.test_pipeline = [t for t in test_pipeline if t['type'] != 'BlockShuffle']
            model.cfg = cfg
            plain = inference_model(model, image).seg_logits.data
    assert correct.shape[1:] == image.shape[:2]
    assert not np.allclose(correct.numpy(), plain.numpy())


def test_mmseg_inferencer(in_cwd, tmp_path):
    from mmseg.apis import MMSegInferencer, init_model
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        inferencer = MMSegInferencer(model=in_cwd['cfg'], weights=in_cwd['checkpoint'],
                                     device='cpu')
        sample = inferencer(in_cwd['image'], return_datasamples=True)
        model = init_model(in_cwd['cfg'], in_cwd['checkpoint'], device='cpu')
    from mmseg.apis import inference_model
    expected = inference_model(model, in_cwd['image'])
    assert np.array_equal(sample.pred_sem_seg.data.numpy(), expected.pred_sem_seg.data.numpy())


def test_missing_key_is_a_clear_error(trained, tmp_path, monkeypatch):
    from mmseg.apis import inference_model, init_model
    monkeypatch.chdir(tmp_path)  # no work_dirs/demo/owner.key here
    with pytest.raises(FileNotFoundError, match='owner.key.*does not exist'):
        # the permutation needs the key to build the model; the cipher to build the pipeline
        model = init_model(copy.deepcopy(trained['cfg']), trained['checkpoint'], device='cpu')
        inference_model(model, trained['image'])
