"""The protection object: parts, descriptor, one key switch, config views (no Runner)."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import Compose
from mmseg.registry import TRANSFORMS

from mmseg_keyprotect.protection.conditions import KeyCondition
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import BlockCipherSegDataPreProcessor
from mmseg_keyprotect.protection import (KEYED_TYPES, PipelineStep, Protection,
                                         ProtectedSegmentor, keyed_role)
from mmseg_keyprotect.transforms import BlockShuffle


def encrypted_segmentor(key: SecretKey):
    from mmseg.registry import MODELS
    return MODELS.build(dict(
        type='KeyProtectedEncoderDecoder',
        protection=dict(key=key, points=['decode_head.conv_seg:input'], encrypt_weights=True),
        data_preprocessor=dict(type='SegDataPreProcessor'),
        backbone=dict(type='ResNetV1c', depth=18, base_channels=8, stem_channels=8,
                      out_indices=(3, )),
        decode_head=dict(type='FCNHead', in_channels=64, channels=8, num_convs=1,
                         num_classes=3, in_index=0, concat_input=False)))


def test_weight_encryption_is_a_part_and_described(key):
    protection = Protection.of(encrypted_segmentor(key))
    types = [type(p).__name__ for p in protection.parts]
    assert sorted(types) == ['PointPermutation', '_WeightEncryption']
    assert {'type': 'WeightEncryption', 'key': key.fingerprint} in protection.describe()
    assert protection.fingerprints == [key.fingerprint]
    assert key.fingerprint in repr(protection) and key.export_hex() not in repr(protection)


def test_one_switch_for_model_and_pipeline_and_apply_is_persistent(key):
    model = encrypted_segmentor(key)
    pipeline = Compose([BlockShuffle(block_size=2, key=key)])
    protection = Protection.of(model, pipeline)
    wrong = SecretKey.generate()
    with protection.applied(KeyCondition.incorrect(wrong)) as parts:
        assert len(parts) == 3 and all(p.active_key == wrong for p in parts)
    assert all(p.key_condition == 'correct' for p in protection.parts)
    with protection.applied(wrong):  # a candidate key: used as given
        assert all(p.active_key == wrong for p in protection.parts)
    saved = protection.apply('plain')
    assert all(p.active_key is None for p in protection.parts)
    assert all(previous == key for _, previous in saved)
    with pytest.raises(ValueError, match='key condition'):
        with protection.applied('sideways'):
            pass


def test_parts_by_role(key):
    model = encrypted_segmentor(key)
    pipeline = Compose([BlockShuffle(block_size=2, key=key)])
    preprocessor = BlockCipherSegDataPreProcessor(cipher=dict(type='BlockNegPos', block_size=2,
                                                              key=key))
    protection = Protection.of(model, pipeline, preprocessor)
    assert [type(c).__name__ for c in protection.data_ciphers] == [
        'BlockShuffle', 'BlockCipherSegDataPreProcessor']
    assert protection.points == ['decode_head.conv_seg:input']
    assert [p.purpose for p in protection.permutations] == protection.points
    assert protection.unsized_points == ['decode_head.conv_seg:input']  # sized on first forward
    assert protection.weight_encryption.key == key
    assert not protection.weight_encryption.allow_plaintext
    assert [type(m).__name__ for m in protection.keyed_modules] == [
        'PointPermutation', 'BlockCipherSegDataPreProcessor']
    unprotected = Protection.of(torch.nn.Conv2d(1, 1, 1))
    assert unprotected.weight_encryption is None and unprotected.points == []
    assert unprotected.data_ciphers == [] and unprotected.keyed_modules == []


def test_weight_encryptions_with_two_keys_are_refused(key, other_key):
    with pytest.raises(ValueError, match='different keys'):
        Protection.of(encrypted_segmentor(key), encrypted_segmentor(other_key)).weight_encryption


def test_encrypt_batch_is_loading_under_the_condition(key, other_key):
    """A batch loaded plain, encrypted afterwards, equals the pipeline's output."""
    shuffle, negpos = BlockShuffle(block_size=2, key=key), \
        TRANSFORMS.build(dict(type='BlockNegPos', block_size=4, key=key))
    pipeline = Compose([shuffle, negpos, dict(type='PackSegInputs')])
    protection = Protection.of(pipeline)
    assert protection.ciphers_replayable
    img = np.random.default_rng(0).integers(0, 256, (8, 8, 3), dtype=np.uint8)

    def load(condition):
        with protection.applied(condition):
            return pipeline(dict(img=img.copy(), img_shape=(8, 8), ori_shape=(8, 8)))['inputs']

    plain = {'inputs': [load('plain')], 'data_samples': ['sample']}
    for condition in ('correct', KeyCondition.incorrect(other_key), 'plain'):
        batch = protection.encrypt_batch(plain, condition)
        assert torch.equal(batch['inputs'][0], load(condition))
        assert batch['data_samples'] == ['sample']
    assert protection.encrypt_batch(plain, 'plain') is plain
    assert not torch.equal(protection.encrypt_batch(plain, 'correct')['inputs'][0],
                           plain['inputs'][0])
    # a preprocessor's cipher is left to the model
    preprocessor = BlockCipherSegDataPreProcessor(cipher=dict(type='BlockShuffle', block_size=2,
                                                              key=key))
    assert Protection.of(preprocessor).encrypt_batch(plain, 'correct') is plain


def test_ciphers_are_replayable_only_when_followed_by_packing(key):
    def replayable(*transforms):
        return Protection.of(Compose(list(transforms))).ciphers_replayable

    cipher = dict(type='BlockShuffle', block_size=2, key=key)
    assert replayable(dict(type='LoadAnnotations'), cipher, dict(type='PackSegInputs'))
    assert not replayable(cipher, dict(type='RandomFlip', prob=0.5), dict(type='PackSegInputs'))
    assert replayable(dict(type='RandomFlip', prob=0.5), cipher, dict(type='PackSegInputs'))


def test_pipeline_and_preprocessor_cipher_describe_alike(key):
    in_pipeline = Protection.of(Compose([BlockShuffle(block_size=4, key=key)])).describe()
    preprocessor = BlockCipherSegDataPreProcessor(cipher=dict(type='BlockShuffle', block_size=4,
                                                              key=key))
    assert Protection.of(preprocessor).describe() == in_pipeline
    # the preprocessor's inner cipher is not a second part
    assert len(Protection.of(preprocessor).parts) == 1


def test_conditions_draw_distinct_keys_and_count_rejections(key):
    shuffle = Protection.of([BlockShuffle(block_size=1, key=key, num_channels=3)])
    # 3! = 6 permutations of a 1x1x3 block: at most 5 incorrect keys
    conditions, rejected = shuffle.conditions(correct=True, plain=True, incorrect=5, seed=0)
    assert [c.kind for c in conditions] == ['correct', 'plain'] + ['incorrect'] * 5
    assert rejected > 0
    with pytest.raises(ValueError, match='too small'):
        shuffle.conditions(incorrect=6)


def test_config_roles_resolve_subclasses_and_registered_names():
    assert isinstance(keyed_role(dict(type='BlockFFX', block_size=2)), PipelineStep)
    assert keyed_role(dict(type='BlockFFX', block_size=2)).block_size(dict(block_size=2)) == 2
    assert isinstance(keyed_role(dict(type='KeyProtectedEncoderDecoder')), ProtectedSegmentor)
    assert keyed_role(dict(type='EncoderDecoder')) is None
    assert keyed_role(dict(type='NotRegisteredAnywhere')) is None
    assert {'BlockCipher', 'KeyProtectedBackbone', 'KeyProtectedHead',
            'BlockCipherSegDataPreProcessor', 'ChannelPermutationNeck'} <= set(KEYED_TYPES)


def test_config_side_needs_a_config(key):
    with pytest.raises(ValueError, match='needs the config'):
        Protection.of(encrypted_segmentor(key)).attacker_view()


def test_attacker_view_unwraps_builders_and_preprocessor(key):
    cfg = Config(dict(
        model=dict(type='EncoderDecoder',
                   data_preprocessor=dict(type='BlockCipherSegDataPreProcessor',
                                          cipher=dict(type='BlockNegPos', block_size=4,
                                                      key=dict(env='KP_X'))),
                   backbone=dict(type='KeyProtectedBackbone', points=['layer1'],
                                 key=dict(env='KP_X'), backbone=dict(type='ResNetV1c')),
                   decode_head=dict(type='FCNHead')),
        test_cfg=dict(type='KeyConditionTestLoop', incorrect=3)))
    view, removed = Protection.from_config(cfg).attacker_view()
    assert view.model.backbone == dict(type='ResNetV1c')
    assert view.model.data_preprocessor == dict(type='SegDataPreProcessor')
    assert removed.points == ['backbone.layer1'] and removed.block_size == 4
    assert view.test_cfg == dict(type='TestLoop')
    assert cfg.model.backbone.type == 'KeyProtectedBackbone'  # the original is untouched


def test_check_sizes_names_the_size_and_the_block(key):
    cfg = dict(test_dataloader=dict(dataset=dict(pipeline=[
        dict(type='RandomCrop', crop_size=(30, 32)),
        dict(type='BlockShuffle', block_size=4, key=dict(env='KP_X'))])))
    with pytest.raises(ValueError, match=r'crop_size=\(30, 32\).*BlockShuffle block_size=4'):
        Protection.from_config(cfg).check_sizes()
    cfg['test_dataloader']['dataset']['pipeline'][0]['crop_size'] = (32, 32)
    Protection.from_config(cfg).check_sizes()


def test_load_weights_as_stored_only_touches_encrypting_protections(key):
    cfg = dict(model=dict(type='KeyProtectedEncoderDecoder',
                          protection=dict(key=key, points=['a'], encrypt_weights=True,
                                          allow_plaintext_weights=True)),
               other=dict(type='KeyProtectedEncoderDecoder', protection=dict(key=key,
                                                                             points=['b'])))
    assert Protection.from_config(cfg).load_weights_as_stored() == ['model.protection']
    assert cfg['model']['protection'] == dict(key=key, points=['a'], encrypt_weights=False)
    assert cfg['other']['protection'] == dict(key=key, points=['b'])
