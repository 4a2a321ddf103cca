"""Weights encrypted at rest: state_dict, mmengine checkpoints, wrong keys, plain loads."""
from __future__ import annotations

import hashlib

import pytest
import torch
from mmengine.runner import load_checkpoint, save_checkpoint
from mmseg.registry import MODELS
from torch import nn

from mmseg_keyprotect.models.weight_encryption import (MARKER, EncryptedWeightsError,
                                                       attach_weight_encryption, xor_tensor)

_BACKBONE = dict(type='ResNetV1c', depth=18, base_channels=8, stem_channels=8,
                 out_indices=(3, ), strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
_HEAD = dict(type='FCNHead', in_channels=64, channels=8, num_convs=1, num_classes=3,
             in_index=0)


def segmentor(key, encrypt=True, points=('decode_head.conv_seg:input', )):
    torch.manual_seed(0)
    return MODELS.build(dict(
        type='KeyProtectedEncoderDecoder', backbone=_BACKBONE, decode_head=_HEAD,
        data_preprocessor=dict(type='SegDataPreProcessor'),
        protection=dict(key=key, points=list(points), encrypt_weights=encrypt))).eval()


def plain_segmentor():
    torch.manual_seed(1)
    return MODELS.build(dict(type='EncoderDecoder', backbone=_BACKBONE, decode_head=_HEAD,
                             data_preprocessor=dict(type='SegDataPreProcessor'))).eval()


def test_state_dict_is_encrypted_and_loads_back(key):
    model = segmentor(key)
    params = {k: v.clone() for k, v in model.named_parameters()}
    state = model.state_dict()
    assert MARKER in state
    weight = 'backbone.stem.0.weight'
    assert state[weight].shape == params[weight].shape
    assert state[weight].dtype == params[weight].dtype
    assert not torch.equal(state[weight], params[weight])
    fresh = segmentor(key)
    for p in fresh.parameters():
        p.data.zero_()
    fresh.load_state_dict(state)
    for name, value in fresh.named_parameters():
        assert torch.equal(value, params[name]), name
    # the model's own parameters were never touched by saving
    for name, value in model.named_parameters():
        assert torch.equal(value, params[name]), name


def test_every_tensor_differs_from_plain(key):
    model = segmentor(key)
    plain = dict(model.named_parameters(), **dict(model.named_buffers()))
    state = model.state_dict()
    changed = [name for name, value in plain.items()
               if name in state and value.numel() >= 4 and not torch.equal(state[name], value)]
    same = [name for name, value in plain.items()
            if name in state and value.numel() >= 4 and name not in changed]
    assert not same
    assert len(changed) > 20


def test_xor_is_its_own_inverse_and_name_dependent(key):
    t = torch.randn(5, 7)
    enc = xor_tensor(t, key, 'a')
    assert torch.equal(xor_tensor(enc, key, 'a'), t)
    assert not torch.equal(xor_tensor(t, key, 'b'), enc)


def test_mmengine_checkpoint_roundtrip_and_wrong_key(tmp_path, key, other_key):
    model = segmentor(key)
    path = tmp_path / 'ckpt.pth'
    save_checkpoint(dict(state_dict=model.state_dict(), meta={}), str(path))
    x = torch.randn(1, 3, 32, 32)
    expected = model(x, mode='tensor')
    restored = segmentor(key)
    load_checkpoint(restored, str(path), map_location='cpu', strict=True)
    assert torch.equal(restored(x, mode='tensor'), expected)
    with pytest.raises(EncryptedWeightsError, match=other_key.fingerprint):
        load_checkpoint(segmentor(other_key), str(path), map_location='cpu')


def test_thief_without_key_gets_noise(tmp_path, key):
    """An unprotected model (the thief's) loads the file but gets scrambled weights."""
    model = segmentor(key)
    state = model.state_dict()
    thief = plain_segmentor()
    missing, unexpected = thief.load_state_dict(state, strict=False)
    assert unexpected == [MARKER] and not missing
    x = torch.randn(1, 3, 32, 32)
    stolen = thief(x, mode='tensor')
    good = model(x, mode='tensor')
    assert not torch.allclose(stolen, good, atol=1e-3, equal_nan=True)


def test_unencrypted_state_dict_loads_as_is(key):
    """Pretrained or unprotected weights (no marker) are loaded without decryption."""
    plain = plain_segmentor()
    model = segmentor(key)
    model.load_state_dict(plain.state_dict())
    assert torch.equal(model.backbone.stem[0].weight, plain.backbone.stem[0].weight)


def test_encrypt_without_points_and_bad_flag(key):
    model = segmentor(key, points=())
    assert not hasattr(model, 'keyprotect_points')
    assert MARKER in model.state_dict()
    with pytest.raises(ValueError, match="encrypt_weights must be True or False, got 'yes'"):
        segmentor(key, encrypt='yes')


def test_no_key_material_in_state_dict_or_repr(key):
    model = segmentor(key)
    blob = b''.join(v.numpy().tobytes() for v in model.state_dict().values())
    for secret in (key.export_hex().encode(), bytes.fromhex(key.export_hex())):
        assert secret not in blob
    assert key.export_hex() not in repr(model)
    assert 'WeightEncryption' not in repr(model)  # not a submodule


def test_attach_twice_is_an_error(key):
    module = nn.Linear(2, 2)
    attach_weight_encryption(module, key)
    with pytest.raises(ValueError, match='already encrypts'):
        attach_weight_encryption(module, key)


def test_keystream_is_pinned_to_the_key_derivation(seed_key):
    """Known answer: the keystream is SHAKE-256 of HMAC(key, 'weights/NONCE/NAME')."""
    t = torch.zeros(4, dtype=torch.uint8)
    nonce = bytes(range(16))
    stream = hashlib.shake_256(seed_key.derive_bytes(f'weights/{nonce.hex()}/w', 32)).digest(4)
    assert bytes(xor_tensor(t, seed_key, 'w', nonce).tolist()) == stream


def test_every_save_uses_a_fresh_keystream(key):
    """Two saves of the same weights share no keystream (no two-time pad)."""
    model = segmentor(key)
    first, second = model.state_dict(), model.state_dict()
    assert not torch.equal(first[MARKER], second[MARKER])
    name = 'backbone.stem.0.weight'
    assert not torch.equal(first[name], second[name])
    fresh = segmentor(key)
    fresh.load_state_dict(second)
    assert torch.equal(fresh.backbone.stem[0].weight, model.backbone.stem[0].weight)


def test_truncated_marker_is_an_error(key):
    state = segmentor(key).state_dict()
    state[MARKER] = state[MARKER][:8]
    with pytest.raises(EncryptedWeightsError, match='has 8 bytes, expected 24'):
        segmentor(key).load_state_dict(state)


def test_descriptor_records_weight_encryption_and_detects_a_mismatch(key):
    from mmseg_keyprotect.engine.protection import (ProtectionMismatchError, check_protection,
                                                    describe_protection)
    encrypted = describe_protection(segmentor(key))
    assert {'type': 'WeightEncryption', 'key': key.fingerprint} in encrypted
    unencrypted = describe_protection(segmentor(key, encrypt=False))
    assert all(e['type'] != 'WeightEncryption' for e in unencrypted)
    with pytest.raises(ProtectionMismatchError, match='WeightEncryption'):
        check_protection(encrypted, unencrypted)


def test_disable_weight_decryption_in_a_config(key):
    from mmseg_keyprotect.models.protected import disable_weight_decryption
    cfg = dict(model=dict(type='KeyProtectedEncoderDecoder',
                          protection=dict(key=key, points=['a'], encrypt_weights=True)))
    assert disable_weight_decryption(cfg) == ['model.protection']
    assert cfg['model']['protection']['encrypt_weights'] is False
    only = dict(model=dict(type='KeyProtectedEncoderDecoder',
                           protection=dict(key=key, points=[], encrypt_weights=True)))
    disable_weight_decryption(only)
    assert only['model'] == dict(type='EncoderDecoder')
