"""Sealed weights: AES-GCM state_dicts, every tamper refused before a weight is copied."""
from __future__ import annotations

import copy
import io
import json
import pickle
import warnings

import pytest
import torch
from mmengine.runner import load_checkpoint, save_checkpoint
from mmseg.registry import MODELS
from torch import nn

from mmseg_keyprotect.keys import SecretKey, WeakKeyWarning
from mmseg_keyprotect.checkpoint import FORMAT, MARKER, EncryptedWeightsError, read_header, seal
from mmseg_keyprotect.models.weight_encryption import (attach_weight_encryption, describe_module,
                                                       sealed_state_dict)
from mmseg_keyprotect.protection import Protection

_BACKBONE = dict(type='ResNetV1c', depth=18, base_channels=8, stem_channels=8,
                 out_indices=(3, ), strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
_HEAD = dict(type='FCNHead', in_channels=64, channels=8, num_convs=1, num_classes=3,
             in_index=0)
WEIGHT = 'backbone.stem.0.weight'


def segmentor(key, encrypt=True, points=('decode_head.conv_seg:input', ), seed=0, **extra):
    torch.manual_seed(seed)
    return MODELS.build(dict(
        type='KeyProtectedEncoderDecoder', backbone=_BACKBONE, decode_head=_HEAD,
        data_preprocessor=dict(type='SegDataPreProcessor'),
        protection=dict(key=key, points=list(points), encrypt_weights=encrypt, **extra))).eval()


def plain_segmentor():
    torch.manual_seed(1)
    return MODELS.build(dict(type='EncoderDecoder', backbone=_BACKBONE, decode_head=_HEAD,
                             data_preprocessor=dict(type='SegDataPreProcessor'))).eval()


def weights(model):
    return {k: v.clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before):
    for name, value in model.state_dict().items():
        assert torch.equal(value, before[name]), f'{name} was written'


def test_sealed_state_dict_keeps_shapes_and_loads_back(key):
    model = segmentor(key)
    state = sealed_state_dict(model)
    header = read_header(state[MARKER])
    assert header['format'] == FORMAT and header['key'] == key.fingerprint
    plain = model.state_dict()  # in memory the weights stay plain
    assert state[WEIGHT].shape == plain[WEIGHT].shape and state[WEIGHT].dtype == plain[WEIGHT].dtype
    changed = [n for n, v in plain.items() if v.numel() >= 4 and not torch.equal(state[n], v)]
    assert len(changed) == sum(v.numel() >= 4 for v in plain.values())
    fresh = segmentor(key, seed=5)
    fresh.load_state_dict(state)
    assert_unchanged(fresh, plain)


def test_every_seal_uses_a_fresh_salt(key):
    model = segmentor(key)
    first, second = sealed_state_dict(model), sealed_state_dict(model)
    assert read_header(first[MARKER])['salt'] != read_header(second[MARKER])['salt']
    assert not torch.equal(first[WEIGHT], second[WEIGHT])


def test_mmengine_checkpoint_roundtrip_and_wrong_key(tmp_path, key, other_key):
    model = segmentor(key)
    path = tmp_path / 'ckpt.pth'
    save_checkpoint(dict(state_dict=sealed_state_dict(model), meta={}), str(path))
    x = torch.randn(1, 3, 32, 32)
    expected = model(x, mode='tensor')
    restored = segmentor(key, seed=3)
    load_checkpoint(restored, str(path), map_location='cpu', strict=True)
    assert torch.equal(restored(x, mode='tensor'), expected)
    wrong = segmentor(other_key, seed=3)
    before = weights(wrong)
    with pytest.raises(EncryptedWeightsError, match=f'{key.fingerprint}.*{other_key.fingerprint}'):
        load_checkpoint(wrong, str(path), map_location='cpu')
    assert_unchanged(wrong, before)


def test_thief_without_key_gets_noise(key):
    """An unprotected model (the thief's) loads the file but gets random bits."""
    model = segmentor(key)
    thief = plain_segmentor()
    missing, unexpected = thief.load_state_dict(sealed_state_dict(model), strict=False)
    assert unexpected == [MARKER] and not missing
    x = torch.randn(1, 3, 32, 32)
    assert not torch.allclose(thief(x, mode='tensor'), model(x, mode='tensor'), atol=1e-3,
                              equal_nan=True)


def _flip_bit(state):
    state[WEIGHT] = state[WEIGHT].clone()
    state[WEIGHT].view(-1).view(torch.uint8)[3] ^= 1


def _swap_from_other_checkpoint(state, other):
    state[WEIGHT] = other[WEIGHT]


def _swap_within(state, other):
    a, b = 'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'
    state[a], state[b] = state[a].clone(), state[b].clone()
    state[a].view(-1)[:3], state[b].view(-1)[:3] = state[b].view(-1)[:3].clone(), \
        state[a].view(-1)[:3].clone()


def _strip_marker(state, other):
    del state[MARKER]


def _edit_descriptor(state, other):
    header = read_header(state[MARKER])
    header['protection'] = [e for e in header['protection'] if e['type'] != 'PointPermutation']
    state[MARKER] = torch.tensor(list(json.dumps(header).encode()), dtype=torch.uint8)


def _drop_tensor(state, other):
    del state['decode_head.conv_seg.bias']


def _add_tensor(state, other):
    state['decode_head.extra'] = torch.zeros(3)


@pytest.mark.parametrize('tamper, match', [
    (lambda s, o: _flip_bit(s), f"tensor '{WEIGHT}' failed authentication"),
    (_swap_from_other_checkpoint, f"tensor '{WEIGHT}' failed authentication.*another checkpoint"),
    (_swap_within, 'failed authentication'),
    (_strip_marker, 'not sealed.*header was stripped.*allow_plaintext_weights'),
    (_edit_descriptor, 'header of the sealed weights failed authentication: it was edited'),
    (_drop_tensor, 'missing: decode_head.conv_seg.bias'),
    (_add_tensor, 'not sealed: decode_head.extra'),
])
def test_tamper_matrix_refused_before_any_weight_is_copied(key, tamper, match):
    model = segmentor(key)
    state, other = sealed_state_dict(model), sealed_state_dict(model)
    tamper(state, other)
    victim = segmentor(key, seed=9)
    before = weights(victim)
    with pytest.raises(EncryptedWeightsError, match=match) as info:
        victim.load_state_dict(state, strict=False)
    assert '\n' not in str(info.value)
    assert_unchanged(victim, before)


def test_another_protection_is_refused(key):
    state = sealed_state_dict(segmentor(key))
    other_points = segmentor(key, points=('backbone.layer1', ))
    with pytest.raises(EncryptedWeightsError, match='was sealed for protection.*PointPermutation'):
        other_points.load_state_dict(state)


def test_plaintext_refused_unless_allowed_and_pretrained_backbones_still_load(key):
    plain = plain_segmentor()
    model = segmentor(key)
    with pytest.raises(EncryptedWeightsError, match='not sealed'):
        model.load_state_dict(plain.state_dict())
    allowed = segmentor(key, allow_plaintext_weights=True)
    allowed.load_state_dict(plain.state_dict())
    assert torch.equal(allowed.backbone.stem[0].weight, plain.backbone.stem[0].weight)
    # init_cfg=dict(type='Pretrained') loads into the backbone itself: not the sealed root
    model.backbone.load_state_dict(plain.backbone.state_dict())
    assert torch.equal(model.backbone.stem[0].weight, plain.backbone.stem[0].weight)
    with pytest.raises(ValueError, match='allow_plaintext_weights=True only applies'):
        segmentor(key, encrypt=False, allow_plaintext_weights=True)


def test_seed_keys_are_refused_for_weight_encryption():
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', WeakKeyWarning)
        with pytest.raises(ValueError, match='seed key.*published key'):
            segmentor(dict(seed=3, published=True))


def test_pickling_the_model_is_refused_and_deepcopy_works(key):
    model = segmentor(key)
    with pytest.raises(TypeError, match='refusing to pickle KeyProtectedEncoderDecoder'):
        torch.save(model, io.BytesIO())
    with pytest.raises(TypeError, match='refusing to pickle'):
        pickle.dumps(model)
    twin = copy.deepcopy(model)  # what mmengine's EMA does
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(twin(x, mode='tensor'), model(x, mode='tensor'))
    twin.load_state_dict(sealed_state_dict(model))
    assert describe_module(twin) == describe_module(model)


def test_no_key_material_in_sealed_state_dict_or_repr(key):
    model = segmentor(key)
    blob = b''.join(v.numpy().tobytes() for v in sealed_state_dict(model).values())
    for secret in (key.export_hex().encode(), bytes.fromhex(key.export_hex())):
        assert secret not in blob
    assert key.export_hex() not in repr(model)
    assert 'WeightEncryption' not in repr(model)  # not a submodule


def test_attach_twice_is_an_error(key):
    module = nn.Linear(2, 2)
    attach_weight_encryption(module, key)
    with pytest.raises(ValueError, match='already encrypts'):
        attach_weight_encryption(module, key)


def test_seal_binds_path_dtype_and_shape(key):
    """A tensor reinterpreted with another dtype or shape fails, as a renamed one does."""
    from mmseg_keyprotect.checkpoint import open_sealed
    t = torch.arange(6, dtype=torch.float32)
    [sealed], header = seal([(('w', ), t)], key, None, 'tree')
    header = read_header(header)
    assert torch.equal(open_sealed(header, {('w', ): sealed}, key, None, 'x')[('w', )], t)
    for changed in (sealed.view(torch.int32), sealed.reshape(2, 3)):
        with pytest.raises(EncryptedWeightsError, match="tensor 'w' failed"):
            open_sealed(header, {('w', ): changed}, key, None, 'x')
    with pytest.raises(EncryptedWeightsError, match='header'):
        read_header(torch.zeros(4, dtype=torch.uint8))


def test_descriptor_records_weight_encryption_and_detects_a_mismatch(key):
    from mmseg_keyprotect.protection import ProtectionMismatchError, check_protection
    encrypted = Protection.of(segmentor(key)).describe()
    assert {'type': 'WeightEncryption', 'key': key.fingerprint} in encrypted
    unencrypted = Protection.of(segmentor(key, encrypt=False)).describe()
    assert all(e['type'] != 'WeightEncryption' for e in unencrypted)
    with pytest.raises(ProtectionMismatchError, match='WeightEncryption'):
        check_protection(encrypted, unencrypted)


def test_load_weights_as_stored_in_a_config(key):
    cfg = dict(model=dict(type='KeyProtectedEncoderDecoder',
                          protection=dict(key=key, points=['a'], encrypt_weights=True)))
    assert Protection.from_config(cfg).load_weights_as_stored() == ['model.protection']
    assert cfg['model']['protection']['encrypt_weights'] is False
    only = dict(model=dict(type='KeyProtectedEncoderDecoder',
                           protection=dict(key=key, points=[], encrypt_weights=True)))
    Protection.from_config(only).load_weights_as_stored()
    assert only['model'] == dict(type='EncoderDecoder')


def test_a_key_file_key_survives_a_pickled_pipeline(key_file):
    """Keys reach spawned workers through their source: the same key comes back."""
    key = SecretKey.from_file(key_file)
    assert pickle.loads(pickle.dumps(key)) == key
