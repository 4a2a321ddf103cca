"""Key-transformed patch embeddings: ViT (SETR/Segmenter/DPT/UPerNet), BEiT, MAE, Swin, Twins."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from mmseg.registry import MODELS, TRANSFORMS

from mmseg_keyprotect.posthoc.absorb import max_output_difference
from mmseg_keyprotect.posthoc.patch_embedding import cipher_affine, transform_patch_embedding
from mmseg_keyprotect.posthoc.segmentor import forward_heads, normalised, random_images

from .families import build_family, family_cfg

# family -> config overrides that keep the patch size but make it small
VIT_FAMILIES = {
    'vit': {}, 'setr': {}, 'segmenter': {}, 'dpt': {}, 'beit': {}, 'mae': {},
    'swin': {}, 'twins': {},
}


@pytest.mark.parametrize('cipher', ['BlockShuffle', 'BlockNegPos'])
def test_cipher_is_read_as_an_affine_map(cipher, key):
    built = TRANSFORMS.build(dict(type=cipher, block_size=4, key=key))
    matrix, shift = cipher_affine(built, 8, 3)  # block 4 inside patch 8
    image = np.random.default_rng(0).integers(0, 256, (8, 16, 3), dtype=np.uint8)
    encrypted = built.encrypt(image)
    for left in (0, 8):
        patch = image[:, left:left + 8].reshape(-1).astype(np.float64)
        assert np.array_equal(matrix @ patch + shift,
                              encrypted[:, left:left + 8].reshape(-1).astype(np.float64))


def test_ffx_is_refused_in_one_line(key):
    built = TRANSFORMS.build(dict(type='BlockFFX', block_size=4, key=key))
    with pytest.raises(ValueError, match=r'^BlockFFX is not an affine permutation') as error:
        cipher_affine(built, 4, 3)
    assert '\n' not in str(error.value)


# the larger models (10-40 s each on 2 busy cores) run with -m slow
_SLOW = {'beit', 'mae', 'swin', 'twins', 'setr', 'dpt'}


@pytest.mark.parametrize('family, cipher', [
    pytest.param(f, 'BlockShuffle', marks=[pytest.mark.slow] if f in _SLOW else [])
    for f in sorted(VIT_FAMILIES)] + [('vit', 'BlockNegPos'),
                                      pytest.param('swin', 'BlockNegPos', marks=pytest.mark.slow)])
def test_transformed_model_on_encrypted_images_equals_plain_model(family, cipher, key,
                                                                  other_key):
    plain = build_family(family, overrides=VIT_FAMILIES[family])
    result = transform_patch_embedding(plain, key, cipher=cipher)
    assert result.max_difference <= 1e-4
    transformed = MODELS.build(family_cfg(family, overrides=VIT_FAMILIES[family]).model).eval()
    transformed.load_state_dict(result.state_dict)
    images = random_images(plain, count=2, seed=3)
    right = TRANSFORMS.build(dict(type=cipher, block_size=result.cipher['block_size'], key=key))
    with torch.no_grad():
        expected = forward_heads(plain, normalised(plain, images))
        correct = forward_heads(transformed, normalised(plain, [right.encrypt(i)
                                                                for i in images]))
        without_key = forward_heads(transformed, normalised(plain, images))
        wrong = forward_heads(transformed, normalised(plain, [right.encrypt(i, other_key)
                                                              for i in images]))
    assert max_output_difference(expected, correct) <= 1e-4
    scale = max(float(t.abs().max()) for t in expected)
    assert max_output_difference(expected, without_key) > 1e-2 * scale
    assert max_output_difference(expected, wrong) > 1e-2 * scale


@pytest.mark.parametrize('family, reason', [
    ('fcn', 'convolution with stride (2, 2)'),
    ('segformer', '7x7 convolution with stride (4, 4)'),
])
def test_models_that_do_not_qualify_are_refused_in_one_line(family, reason, key):
    with pytest.raises(ValueError, match=re.escape(reason)) as error:
        transform_patch_embedding(build_family(family), key)
    assert '\n' not in str(error.value)


@pytest.mark.parametrize('family', ['vit', pytest.param('swin', marks=pytest.mark.slow)])
def test_slide_inference_on_a_larger_image_is_exact(family, key):
    plain = build_family(family)
    result = transform_patch_embedding(plain, key, cipher='BlockNegPos')
    transformed = MODELS.build(family_cfg(family).model).eval()
    transformed.load_state_dict(result.state_dict)
    cipher = TRANSFORMS.build(dict(type='BlockNegPos', block_size=result.cipher['block_size'],
                                   key=key))
    images = random_images(plain, (96, 128), count=1, seed=4)
    metas = [dict(img_shape=(96, 128), ori_shape=(96, 128), pad_shape=(96, 128))]
    slide = dict(mode='slide', crop_size=(64, 64), stride=(32, 32))
    for model in (plain, transformed):
        model.test_cfg = type(model.test_cfg)(slide)
    with torch.no_grad():
        expected = plain.inference(normalised(plain, images), metas)
        got = transformed.inference(normalised(plain, [cipher.encrypt(i) for i in images]),
                                    metas)
    assert (expected - got).abs().max() <= 1e-4
