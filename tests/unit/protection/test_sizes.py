"""The protection's early config check: block scrambling needs the model to unscramble."""
from __future__ import annotations

import pytest

from mmseg_keyprotect.protection import Protection

_CIPHER = dict(type='BlockScramble', block_size=16, inner='BlockShuffle', key=dict(seed=1))


def _cfg(protection=None, mode='whole'):
    model = dict(type='EncoderDecoder', test_cfg=dict(mode=mode),
                 data_preprocessor=dict(type='BlockCipherSegDataPreProcessor', cipher=_CIPHER,
                                        size=(64, 64)))
    if protection is not None:
        model.update(type='KeyProtectedEncoderDecoder', protection=protection)
    return dict(model=model)


def test_a_scrambled_model_passes():
    Protection.from_config(_cfg(dict(key=dict(seed=1), points=[], block_scramble=dict(
        block_size=16, grid=[4, 4])))).check_sizes()


def test_block_scrambling_without_unscrambling_is_refused_in_one_line():
    with pytest.raises(ValueError, match='BlockScramble moves whole blocks but not the labels') \
            as error:
        Protection.from_config(_cfg()).check_sizes()
    assert '\n' not in str(error.value)


def test_slide_inference_of_a_scrambled_model_is_refused():
    protection = dict(key=dict(seed=1), points=[], block_scramble=dict(block_size=16,
                                                                        grid=[4, 4]))
    with pytest.raises(ValueError, match=r"exact only under mode='whole'.*'slide'"):
        Protection.from_config(_cfg(protection, mode='slide')).check_sizes()
