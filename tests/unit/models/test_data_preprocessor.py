"""BlockCipherSegDataPreProcessor against the numpy pipeline ciphers and SegDataPreProcessor."""
from __future__ import annotations

import copy
import pickle
import re
import warnings

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmseg.models.data_preprocessor import SegDataPreProcessor
from mmseg.registry import MODELS, TRANSFORMS
from mmseg.structures import SegDataSample

from mmseg_keyprotect.protection import check_protection
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import BlockCipherSegDataPreProcessor
from mmseg_keyprotect.protection.conditions import KeyCondition
from mmseg_keyprotect.evaluation.prefix_cache import KeyIndependentPrefix
from mmseg_keyprotect.protection import Protection
from tests.unit.evaluation.test_prefix_cache import DEMO_CONFIG
from tests.unit.models.test_batched_ciphers import images, packed

CIPHERS = ['BlockShuffle', 'BlockNegPos', 'BlockFFX']
NORM = dict(mean=[123.675, 116.28, 103.53], std=[58.395, 57.12, 57.375], bgr_to_rgb=True)


def batch(imgs) -> dict:
    samples = []
    for img in imgs:
        shape = tuple(np.asarray(img).shape[:2])
        samples.append(SegDataSample(metainfo=dict(img_shape=shape, ori_shape=shape)))
    return dict(inputs=packed(imgs), data_samples=samples)


def preprocessor(cipher: str, key, block_size: int = 4, **kwargs) -> BlockCipherSegDataPreProcessor:
    return MODELS.build(dict(type='BlockCipherSegDataPreProcessor', **{**NORM, **kwargs},
                             cipher=dict(type=cipher, block_size=block_size, key=key)))


@pytest.mark.parametrize('name', CIPHERS)
def test_preprocessor_equals_pipeline_cipher_then_segdatapreprocessor(name, key):
    """The model input is the same whether the cipher runs in the pipeline or the preprocessor."""
    transform = TRANSFORMS.build(dict(type=name, block_size=4, key=key))
    imgs = images(shape=(20, 28, 3))
    encrypted = [transform(dict(img=i.copy()))['img'] for i in imgs]
    for training, kwargs in ((True, dict(size=(32, 32))), (False, {})):
        reference = SegDataPreProcessor(**NORM, **kwargs)(batch(encrypted), training)
        pre = preprocessor(name, key, **kwargs)
        out = pre(batch(imgs), training)
        assert out['inputs'].shape == reference['inputs'].shape
        if name == 'BlockFFX':
            torch.testing.assert_close(out['inputs'], reference['inputs'], rtol=0, atol=1e-5)
        else:
            assert torch.equal(out['inputs'], reference['inputs'])


def test_images_of_different_shapes_in_one_batch(key):
    transform = TRANSFORMS.build(dict(type='BlockShuffle', block_size=4, key=key))
    imgs = [images(1, (16, 24, 3))[0], images(1, (8, 8, 3), seed=1)[0],
            images(1, (16, 24, 3), seed=2)[0]]
    pre = preprocessor('BlockShuffle', key)
    for got, img in zip(pre.encrypt_inputs(packed(imgs)), imgs):
        assert np.array_equal(got.numpy().transpose(1, 2, 0), transform.encrypt(img))


@pytest.mark.parametrize('name', CIPHERS)
def test_misaligned_images_raise_the_transforms_error(name, key):
    transform = TRANSFORMS.build(dict(type=name, block_size=4, key=key))
    img = images(2, (18, 24, 3))
    with pytest.raises(ValueError, match='cannot be cut into 4x4 blocks') as from_transform:
        transform(dict(img=img[0]))
    with pytest.raises(ValueError, match='cannot be cut into 4x4 blocks') as from_batch:
        preprocessor(name, key)(batch(img), True)
    message = str(from_batch.value)
    assert '(2, 3, 18, 24)' in message and 'block_size=4' in message
    assert str(from_transform.value).split('blocks: ')[1] == message.split('blocks: ')[1]


def test_wrong_channels_and_dtype_raise(key):
    pre = MODELS.build(dict(type='BlockCipherSegDataPreProcessor', cipher=dict(
        type='BlockFFX', block_size=2, key=key, num_channels=3)))
    with pytest.raises(ValueError, match='1 channel.*num_channels=3'):
        pre.encrypt_inputs([torch.zeros(1, 4, 4, dtype=torch.uint8)])
    with pytest.raises(ValueError, match='unsupported dtype torch.float32.*block_size=2'):
        pre.encrypt_inputs([torch.zeros(3, 4, 4)])
    shf = preprocessor('BlockShuffle', key)
    with pytest.raises(ValueError, match=r'values in \[300, 300\]; expected 0..255'):
        shf.encrypt_inputs([torch.full((3, 4, 4), 300.0)])


@pytest.mark.parametrize('kwargs, what', [
    (dict(size=(64, 62)), 'size=(64, 62)'),
    (dict(size_divisor=6), 'size_divisor=6'),
    (dict(test_cfg=dict(size_divisor=2)), 'test_cfg.size_divisor=2'),
])
def test_padding_sizes_must_be_multiples_of_the_block_size(kwargs, what, key):
    with pytest.raises(ValueError, match=re.escape(what) + ' is not a multiple of BlockShuffle '
                       'block_size=4'):
        preprocessor('BlockShuffle', key, **kwargs)
    preprocessor('BlockShuffle', key, size=(64, 64), test_cfg=dict(size_divisor=8))


def test_only_block_ciphers_are_accepted(key):
    with pytest.raises(TypeError, match='cipher must be a block cipher'):
        MODELS.build(dict(type='BlockCipherSegDataPreProcessor',
                          cipher=dict(type='RandomFlip', prob=0.5)))


def test_key_conditions_switch_the_preprocessor(key, other_key):
    imgs = images()
    pre = preprocessor('BlockNegPos', key)
    model = torch.nn.Sequential()
    model.data_preprocessor = pre
    assert Protection.of(model).parts == [pre]
    plain_ref = SegDataPreProcessor(**NORM)(batch(imgs))['inputs']
    wrong = TRANSFORMS.build(dict(type='BlockNegPos', block_size=4, key=other_key))
    wrong_ref = SegDataPreProcessor(**NORM)(
        batch([wrong.encrypt(i) for i in imgs]))['inputs']
    correct = pre(batch(imgs))['inputs']
    with Protection.of(model).applied(KeyCondition.plain()):
        assert pre.key_condition == 'plain'
        assert torch.equal(pre(batch(imgs))['inputs'], plain_ref)
    with Protection.of(model).applied(KeyCondition.incorrect(other_key)):
        assert pre.key_condition == 'incorrect'
        assert torch.equal(pre(batch(imgs))['inputs'], wrong_ref)
    assert pre.key_condition == 'correct'
    assert torch.equal(pre(batch(imgs))['inputs'], correct)
    assert not torch.equal(correct, plain_ref) and not torch.equal(correct, wrong_ref)


def test_tables_follow_the_batch_device(key):
    pre = preprocessor('BlockShuffle', key)
    devices = ['meta'] + (['cuda'] if torch.cuda.is_available() else [])
    for device in devices:
        x = torch.zeros(2, 3, 8, 8, dtype=torch.uint8, device=device)
        out = pre.batched.encrypt(x, key)
        assert out.device == x.device and out.shape == x.shape
    if torch.cuda.is_available():
        cpu = torch.stack(packed(images(2, (8, 8, 3))))
        assert torch.equal(pre.batched.encrypt(cpu.cuda(), key).cpu(),
                           pre.batched.encrypt(cpu, key))


def test_copies_and_repr_hold_no_key_material(key_file):
    key = SecretKey.from_file(key_file)  # pickles as its source, as workers need
    pre = preprocessor('BlockFFX', key)
    pre(batch(images(2)))  # build the tables first
    text = repr(pre)
    assert key.fingerprint in text and key.export_hex() not in text
    assert "cipher=BlockFFX(block_size=4" in text and "condition='correct'" in text
    data = pickle.dumps(pre)
    assert bytes.fromhex(key.export_hex()) not in data and key.export_hex().encode() not in data
    assert not pickle.loads(data).batched._tables
    assert torch.equal(copy.deepcopy(pre)(batch(images(2)))['inputs'],
                       pre(batch(images(2)))['inputs'])


def test_descriptor_equals_the_pipeline_ciphers(key, other_key):
    """A checkpoint trained with the pipeline cipher is accepted with the preprocessor cipher."""
    pipeline = [TRANSFORMS.build(dict(type='BlockShuffle', block_size=4, key=key))]
    model = torch.nn.Sequential()
    model.data_preprocessor = preprocessor('BlockShuffle', key)
    stored = Protection.of(pipeline).describe()
    assert Protection.of(model).describe() == stored == [
        {'block_size': 4, 'key': key.fingerprint, 'type': 'BlockShuffle'}]
    check_protection(stored, Protection.of(model).describe())
    for other in (preprocessor('BlockShuffle', other_key), preprocessor('BlockNegPos', key),
                  preprocessor('BlockShuffle', key, block_size=2)):
        model.data_preprocessor = other
        with pytest.raises(ValueError, match='trained with protection'):
            check_protection(stored, Protection.of(model).describe())


def test_config_alignment_check_sees_the_preprocessor_cipher():
    cfg = Config.fromfile('configs/demo/fcn_r18-d8_shf-b2-preproc_demo.py')
    Protection.from_config(cfg).check_sizes()
    bad = copy.deepcopy(cfg)
    bad.train_dataloader.dataset.pipeline[3].crop_size = (63, 64)
    with pytest.raises(ValueError, match=r'train_dataloader.dataset.pipeline\[3\] RandomCrop '
                       r'crop_size=\(63, 64\) is not a multiple of model.data_preprocessor '
                       'cipher BlockShuffle block_size=2'):
        Protection.from_config(bad).check_sizes()
    bad = copy.deepcopy(cfg)
    bad.model.data_preprocessor.test_cfg = dict(size_divisor=3)
    with pytest.raises(ValueError, match='test_cfg size_divisor=3'):
        Protection.from_config(bad).check_sizes()


def test_prefix_cache_does_not_replay_past_the_preprocessor(key, other_key):
    """With a cipher in the preprocessor, nothing before a later permutation is key-independent."""
    cfg = Config.fromfile(str(DEMO_CONFIG))
    cfg.model.type = 'KeyProtectedEncoderDecoder'
    cfg.model.protection = dict(key=key, points=['decode_head.conv_seg:input'])
    cfg.model.data_preprocessor.update(type='BlockCipherSegDataPreProcessor', cipher=dict(
        type='BlockShuffle', block_size=2, key=key))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(cfg.model).eval()
    data = batch(images(2, (32, 32, 3)))
    prefix = KeyIndependentPrefix(model)
    conditions = [KeyCondition.correct(), KeyCondition.plain(),
                  KeyCondition.incorrect(other_key)]
    with torch.no_grad():
        fresh = []
        for condition in conditions:
            with Protection.of(model).applied(condition):
                fresh.append(model.test_step(copy.deepcopy(data))[0].seg_logits.data)
        for i, condition in enumerate(conditions):
            share = prefix.record() if i == 0 else prefix.replay()
            with Protection.of(model).applied(condition), share:
                logits = model.test_step(copy.deepcopy(data))[0].seg_logits.data
            assert torch.equal(logits, fresh[i])
    assert prefix.replayed_calls == 0
    assert not torch.equal(fresh[0], fresh[1])
