"""Key rotation without retraining (posthoc/rekey.py)."""
from __future__ import annotations

import pytest
import torch
from mmseg.registry import MODELS

from mmseg_keyprotect.posthoc.absorb import max_output_difference
from mmseg_keyprotect.posthoc.rekey import rekey_permutations
from mmseg_keyprotect.posthoc.segmentor import forward_heads, probe_input
from mmseg_keyprotect.protection import Protection

from .families import family_cfg


def _protected(family, key, points='auto', **changes):
    cfg = family_cfg(family)
    torch.manual_seed(0)
    return MODELS.build(dict(cfg.model, type='KeyProtectedEncoderDecoder',
                             protection=dict(key=key, points=points), **changes)).eval()


@pytest.mark.parametrize('family', ['fcn', 'segformer'])
def test_rekeyed_model_matches_under_the_new_key_only(family, key, other_key):
    trained = _protected(family, key)  # as if trained under key
    result = rekey_permutations(trained, other_key)
    assert result.max_difference <= 1e-4 and result.changed
    rekeyed = _protected(family, other_key)
    rekeyed.load_state_dict(result.state_dict)
    inputs = probe_input(trained, seed=7, batch=2)
    with torch.no_grad():
        expected = forward_heads(trained, inputs)
        assert max_output_difference(expected, forward_heads(rekeyed, inputs)) <= 1e-4
        with Protection.of(rekeyed).applied(key):  # the old key no longer fits
            old = forward_heads(rekeyed, inputs)
    scale = max(float(t.abs().max()) for t in expected)
    assert max_output_difference(expected, old) > 1e-2 * scale


def test_same_key_is_refused(key):
    with pytest.raises(ValueError, match='already has'):
        rekey_permutations(_protected('fcn', key, ['decode_head.conv_seg:input']), key)


def test_block_cipher_is_refused_in_one_line(key, other_key):
    cfg = family_cfg('fcn')
    preprocessor = dict(cfg.model.data_preprocessor, type='BlockCipherSegDataPreProcessor',
                        cipher=dict(type='BlockShuffle', block_size=4, key=key))
    model = _protected('fcn', key, ['decode_head.conv_seg:input'],
                       data_preprocessor=preprocessor)
    with pytest.raises(ValueError) as error:
        rekey_permutations(model, other_key)
    message = str(error.value)
    assert '\n' not in message and 'BlockShuffle (block size 4)' in message
    assert 'without retraining' in message
