"""MMSegInferencer on protected, weight-encrypted models of several families (sweep checkpoints)."""
from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from mmseg_keyprotect.datasets import make_synthetic_voc
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.testing.sweep import check_family, family_config, predict_logits
from mmseg_keyprotect.protection.conditions import KeyCondition, make_conditions
from mmseg_keyprotect.protection import Protection

# token features (SegFormer), a family with no config in this project, a cascade (slow)
FAMILIES = ['segformer', 'bisenetv2', pytest.param('ocrnet', marks=pytest.mark.slow)]


@pytest.fixture(scope='module')
def root(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp('inferencer')
    SecretKey.generate().save(root / 'owner.key')
    make_synthetic_voc(root / 'data', num_train=1, num_val=1, image_size=(64, 64))
    return root


@pytest.mark.parametrize('family', FAMILIES)
def test_inferencer_decrypts_and_switches_conditions(root, family):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        result = check_family(family, root, root / 'owner.key', root / 'data', test_loop=False)
    assert result.status == 'ok', result
    from mmseg.apis import MMSegInferencer
    folder = root / family
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        inferencer = MMSegInferencer(model=family_config(folder),
                                     weights=str(folder / 'model.pth'), device='cpu')
    image = np.random.default_rng(0).integers(0, 256, (64, 64, 3), dtype=np.uint8)

    def logits() -> torch.Tensor:
        result = inferencer(image, return_datasamples=True)
        assert result.pred_sem_seg.data.shape == (1, 64, 64)
        return result.seg_logits.data

    correct = logits()
    wrong = make_conditions(correct=False, plain=False, incorrect=1, seed=0)[0]
    with Protection.of(inferencer.model).applied(KeyCondition.plain()):
        plain = logits()
    with Protection.of(inferencer.model).applied(wrong):
        incorrect = logits()
    assert not torch.allclose(correct, plain) and not torch.allclose(correct, incorrect)
    # the weights were decrypted on load: the inferencer reproduces the swept model's outputs
    saved = torch.load(folder / 'io.pt', weights_only=True)
    again = predict_logits(inferencer.model, saved['inputs'])
    torch.testing.assert_close(again, saved['correct'], rtol=1e-4, atol=1e-5)
