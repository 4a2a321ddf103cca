"""Everyday saves: no part of a protected model pickles; a clear state_dict warns once."""
from __future__ import annotations

import copy
import io
import warnings

import pytest
import torch
from mmengine.runner.checkpoint import get_state_dict
from torch import nn

from mmseg_keyprotect.checkpoint import sealing
from mmseg_keyprotect.models.save_guard import ClearWeightsWarning
from mmseg_keyprotect.models.weight_encryption import sealed_state_dict

from .test_weight_encryption import segmentor


def _pickle(obj) -> None:
    torch.save(obj, io.BytesIO())


@pytest.mark.parametrize('part', [
    lambda m: m.backbone, lambda m: m.decode_head, lambda m: m.decode_head.conv_seg,
    lambda m: nn.ModuleList(m.children()), lambda m: copy.deepcopy(m.backbone),
    lambda m: {'model': m.backbone},
], ids=['backbone', 'decode_head', 'conv_seg', 'children', 'deepcopy', 'in_a_dict'])
@pytest.mark.parametrize('encrypt', [True, False])
def test_no_part_of_a_protected_model_pickles(key, part, encrypt):
    model = segmentor(key, encrypt=encrypt)
    with pytest.raises(TypeError, match='refusing to pickle a part of the protected '
                       'KeyProtectedEncoderDecoder.*export_sealed') as info:
        _pickle(part(model))
    assert '\n' not in str(info.value)


def test_deepcopy_still_works_and_shares_the_guard(key):
    model = segmentor(key)
    copied = copy.deepcopy(model)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(copied(x, mode='tensor'), model(x, mode='tensor'))


@pytest.mark.parametrize('take', [
    lambda m: m.state_dict(), lambda m: m.backbone.state_dict(), lambda m: get_state_dict(m),
    lambda m: copy.deepcopy(m.backbone).state_dict(),
], ids=['model', 'backbone', 'mmengine_get_state_dict', 'deepcopy'])
def test_a_clear_state_dict_warns_once(key, take):
    model = segmentor(key)
    with pytest.warns(ClearWeightsWarning, match='encrypt_weights=True.*clear.*export_sealed'):
        take(model)
    with warnings.catch_warnings():
        warnings.simplefilter('error', ClearWeightsWarning)
        take(model)  # once per model


def test_the_sealing_paths_and_unencrypted_models_do_not_warn(key):
    with warnings.catch_warnings():
        warnings.simplefilter('error', ClearWeightsWarning)
        model = segmentor(key)
        sealed_state_dict(model)
        with sealing():
            model.state_dict()
        segmentor(key, encrypt=False).state_dict()
        fresh = segmentor(key, seed=4)
        fresh.load_state_dict(sealed_state_dict(model))  # the load hook takes its own tensors
