"""Key-transformed patch embeddings: ViT (SETR/Segmenter/DPT/UPerNet), BEiT, MAE, Swin, Twins;
block scrambling on ViTs (and its refusals)."""
from __future__ import annotations

import re

import numpy as np
import pytest
import torch
from mmseg.registry import MODELS, TRANSFORMS

from mmseg_keyprotect.posthoc.absorb import max_output_difference
from mmseg_keyprotect.posthoc.patch_embedding import cipher_affine, transform_patch_embedding
from mmseg_keyprotect.posthoc.segmentor import forward_heads, normalised, random_images
from mmseg_keyprotect.protection import Protection

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


# Block scrambling: the position embedding is permuted for the training grid, so the
# backbone's img_size is the input size (64x64 here, a 4x4 grid of 16x16 patches).
_AT_64 = {'model.backbone.img_size': (64, 64)}


def _with_position_embedding(family):
    """The plain model with a random position embedding, as training leaves it (mmseg builds
    it as zeros, which no permutation changes)."""
    plain = build_family(family, overrides=_AT_64)
    with torch.no_grad():
        plain.backbone.pos_embed.normal_(0, 0.5, generator=torch.Generator().manual_seed(2))
    return plain


def _scrambled_model(family, result, key, overrides=_AT_64):
    """The model the protected config builds: the cipher in the preprocessor, the
    unscrambling on the backbone's outputs, the transformed weights."""
    cfg = family_cfg(family, overrides=overrides).model
    cfg.update(type='KeyProtectedEncoderDecoder',
               protection=dict(key=key, points=[], **result.protection),
               data_preprocessor=dict(cfg.data_preprocessor,
                                      type='BlockCipherSegDataPreProcessor',
                                      cipher=dict(result.cipher, key=key)))
    model = MODELS.build(cfg).eval()
    model.load_state_dict(result.state_dict)
    return model


@pytest.mark.parametrize('family, cipher', [
    ('vit', 'BlockScramble+BlockShuffle'), ('segmenter', 'BlockScramble'),
    pytest.param('vit', 'BlockScramble+BlockNegPos', marks=pytest.mark.slow),
    pytest.param('dpt', 'BlockScramble+BlockShuffle', marks=pytest.mark.slow),  # cls token out
    pytest.param('setr', 'BlockScramble+BlockShuffle', marks=pytest.mark.slow),
])
def test_block_scrambled_model_equals_plain_model_under_the_key_only(family, cipher, key,
                                                                     other_key):
    plain = _with_position_embedding(family)
    result = transform_patch_embedding(plain, key, cipher=cipher)
    assert result.max_difference <= 1e-4 and 'backbone.pos_embed' in result.points
    assert not torch.equal(result.state_dict['backbone.pos_embed'],
                           plain.state_dict()['backbone.pos_embed'])
    model = _scrambled_model(family, result, key)
    protection = Protection.of(model)
    assert {e['type'] for e in protection.describe()} == {'BlockScramble', 'BlockUnscramble'}
    images = random_images(plain, count=2, seed=3)
    with torch.no_grad():
        expected = forward_heads(plain, normalised(plain, images))
        outputs = {}
        for condition in ('correct', 'plain', other_key):
            with protection.applied(condition):
                outputs[str(condition)] = forward_heads(model, normalised(model, images))
    assert max_output_difference(expected, outputs['correct']) <= 1e-4
    scale = max(float(t.abs().max()) for t in expected)
    assert max_output_difference(expected, outputs['plain']) > 1e-2 * scale
    assert max_output_difference(expected, outputs[str(other_key)]) > 1e-2 * scale


@pytest.mark.parametrize('family, reason', [
    ('swin', 'SwinTransformer: its attention is windowed'),
    ('twins', 'PCPVT: its position encoding is a convolution over the token grid'),
    ('beit', 'BEiT: its attention adds a relative position bias'),
    pytest.param('mae', 'MAE: its attention adds a relative position bias',
                 marks=pytest.mark.slow),
])
def test_block_scrambling_is_refused_in_one_line_where_it_cannot_be_exact(family, reason, key):
    overrides = {} if family in ('swin', 'twins') else _AT_64
    with pytest.raises(ValueError, match='^' + re.escape(reason)) as error:
        transform_patch_embedding(build_family(family, overrides=overrides), key,
                                  cipher='BlockScramble')
    assert '\n' not in str(error.value) and 'cannot be kept exact' in str(error.value)


def test_block_scrambling_refuses_slide_inference_and_other_sizes(key):
    plain = build_family('vit', overrides=_AT_64)
    with pytest.raises(ValueError, match=r'^VisionTransformer: block scrambling is exact only '
                                         r'at .*64x64.*got input size 96x128$'):
        transform_patch_embedding(plain, key, cipher='BlockScramble', input_size=(96, 128))
    plain.test_cfg = type(plain.test_cfg)(mode='slide', crop_size=(64, 64), stride=(32, 32))
    with pytest.raises(ValueError, match=r"^block scrambling is exact only under "
                                         r"mode='whole'.*mode='slide'") as error:
        transform_patch_embedding(plain, key, cipher='BlockScramble')
    assert '\n' not in str(error.value)
