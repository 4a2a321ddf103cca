"""SAN's CLIP text encoder is sealed with the rest of the model, and reloads in a fresh process.

A protected SAN (``KeyProtectedMultimodalEncoderDecoder`` from mmseg's config, shrunk as
the sweep shrinks it, ``points='auto'``, ``encrypt_weights=True``) goes through the
sweep's checks (:func:`~mmseg_keyprotect.testing.sweep.run_sweep`: three different
outputs, gradients, the sealed checkpoint, and the reload in a fresh Python process to the
same outputs). The checkpoint file is then searched for the text encoder's weights in clear:
a model built from the same config decrypts them from the file, and neither any of their
bytes nor any of their tensors appears as stored. The same in one process, in the default
suite: ``tests/unit/models/test_protected.py``.
"""
from __future__ import annotations

import warnings

import pytest
import torch
from mmengine.registry import init_default_scope
from mmengine.runner import CheckpointLoader
from mmengine.runner.checkpoint import load_checkpoint
from mmseg.registry import MODELS

from mmseg_keyprotect.testing.sweep import family_config, run_sweep
from tests.unit.models.test_protected import clear_tensors_in


@pytest.mark.slow  # 30 s to 2 min on 2 shared cores: the sweep's checks on SAN, a fresh process
def test_san_checkpoint_holds_no_text_encoder_weight_in_clear(tmp_path):
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        result, = run_sweep(['san'], tmp_path, test_loop=False)
    assert result.status == 'ok', result  # includes the fresh-process reload
    folder = tmp_path / 'san'
    stored = CheckpointLoader.load_checkpoint(str(folder / 'model.pth'),
                                              map_location='cpu')['state_dict']
    init_default_scope('mmseg')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(family_config(folder).model).eval()
        load_checkpoint(model, str(folder / 'model.pth'), map_location='cpu', strict=True)
        clear = {name: tensor.detach().clone() for name, tensor in model.state_dict().items()
                 if name.startswith('text_encoder.')}
    assert len(clear) > 10 and sum(t.numel() for t in clear.values()) > 10_000
    assert set(clear) <= set(stored)
    same = [name for name in clear if torch.equal(stored[name], clear[name])]
    assert not same, f'stored in clear: {same}'
    found, searched = clear_tensors_in((folder / 'model.pth').read_bytes(), clear)
    assert searched >= 5 and found == [], found
