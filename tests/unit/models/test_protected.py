"""The registered wrappers that attach permutations: backbone, head, neck and segmentor."""
from __future__ import annotations

import warnings
from typing import Dict, List, Tuple

import pytest
import torch
from mmseg.models.backbones import ResNetV1c
from mmseg.models.decode_heads import FCNHead
from mmseg.registry import MODELS
from torch import Tensor

from mmseg_keyprotect.models import ChannelPermutation, channel_permutation_index


def alpha(key, purpose: str, channels: int) -> Tensor:
    return channel_permutation_index(key, purpose, channels)


# -------------------------------------------------------------- wrappers
def small_resnet(**kwargs) -> dict:
    return dict(type='ResNetV1c', depth=18, out_indices=(0, 1, 2, 3), **kwargs)


def test_backbone_wrapper_returns_the_backbone_itself(key):
    torch.manual_seed(0)
    plain = MODELS.build(small_resnet())
    torch.manual_seed(0)
    wrapped = MODELS.build(dict(type='KeyProtectedBackbone', backbone=small_resnet(), key=key,
                                points=['layer1:input', 'layer4'], pretrained=None))
    assert type(wrapped) is ResNetV1c
    assert list(wrapped.state_dict()) == list(plain.state_dict())
    purposes = [m.purpose for m in wrapped.modules() if isinstance(m, ChannelPermutation)]
    assert purposes == ['backbone.layer1:input', 'backbone.layer4:output']
    x = torch.randn(1, 3, 32, 32)
    plain.eval(), wrapped.eval()
    out = wrapped(x)
    stem = plain.maxpool(plain.stem(x))[:, alpha(key, 'backbone.layer1:input', 64)]
    feats = [plain.layer1(stem)]
    for name in ('layer2', 'layer3', 'layer4'):
        feats.append(getattr(plain, name)(feats[-1]))
    feats[3] = feats[3][:, alpha(key, 'backbone.layer4:output', 512)]
    for got, expected in zip(out, feats):
        torch.testing.assert_close(got, expected)


def test_backbone_wrapper_overrides_reach_the_backbone(key):
    wrapped = MODELS.build(dict(type='KeyProtectedBackbone', backbone=small_resnet(), key=key,
                                points=['layer1'], out_indices=(3, )))
    assert wrapped.out_indices == (3, )


def test_head_wrapper_matches_segmentor_level_point(key):
    head = dict(type='FCNHead', in_channels=8, channels=4, num_convs=1, num_classes=3)
    built = MODELS.build(dict(type='KeyProtectedHead', head=head, key=key,
                              points=['conv_seg:input'], num_classes=5))
    assert type(built) is FCNHead and built.num_classes == 5
    (perm, ) = [m for m in built.modules() if isinstance(m, ChannelPermutation)]
    assert perm.purpose == 'decode_head.conv_seg:input'
    assert 'conv_seg' in dict(built.named_children())
    assert not any('keyprotect' in k or 'index' in k for k in built.state_dict())


def test_head_wrapper_bad_path_names_it(key):
    head = dict(type='FCNHead', in_channels=8, channels=4, num_convs=1, num_classes=3)
    with pytest.raises(ValueError, match=r"'decode_head.conv_sg:input'.*'conv_seg'"):
        MODELS.build(dict(type='KeyProtectedHead', head=head, key=key, points=['conv_sg:input']))


def test_neck_permutes_chosen_outputs(key):
    neck = MODELS.build(dict(type='ChannelPermutationNeck', in_channels=[2, 4, 8], indices=[2, 0],
                             key=key))
    feats = [torch.randn(1, c, 3, 3) for c in (2, 4, 8)]
    out = neck(feats)
    assert isinstance(out, tuple) and len(out) == 3
    assert torch.equal(out[0], feats[0][:, alpha(key, 'neck:input[0]', 2)])
    assert out[1] is feats[1]
    assert torch.equal(out[2], feats[2][:, alpha(key, 'neck:input[2]', 8)])
    assert neck.state_dict() == {}
    with pytest.raises(ValueError, match=r'expected 3 backbone outputs.*got 2'):
        neck(feats[:2])


@pytest.mark.parametrize('indices', [[], [3], [1, 1], [-1]])
def test_neck_bad_indices(key, indices):
    with pytest.raises(ValueError, match=r'indices must be distinct outputs in \[0, 3\)'):
        MODELS.build(dict(type='ChannelPermutationNeck', in_channels=[2, 4, 8], indices=indices,
                          key=key))


def test_neck_missing_key():
    with pytest.raises(ValueError, match='ChannelPermutationNeck needs a key'):
        MODELS.build(dict(type='ChannelPermutationNeck', in_channels=[2], indices=[0]))


def small_segmentor(**kwargs) -> dict:
    return dict(
        backbone=small_resnet(),
        decode_head=dict(type='FCNHead', in_channels=512, in_index=3, channels=16,
                         num_convs=1, num_classes=3),
        **kwargs)


def test_segmentor_matches_backbone_and_head_wrappers(key):
    """The same full point names give the same permutations whichever wrapper places them."""
    torch.manual_seed(0)
    segmentor = MODELS.build(dict(
        type='KeyProtectedEncoderDecoder',
        protection=dict(key=key, points=['backbone.layer2', 'decode_head.conv_seg:input']),
        **small_segmentor())).eval()
    cfg = small_segmentor(type='EncoderDecoder')
    cfg['backbone'] = dict(type='KeyProtectedBackbone', backbone=cfg['backbone'], key=key,
                           points=['layer2'])
    cfg['decode_head'] = dict(type='KeyProtectedHead', head=cfg['decode_head'], key=key,
                              points=['conv_seg:input'])
    torch.manual_seed(0)
    wrapped = MODELS.build(cfg).eval()
    assert list(segmentor.state_dict()) == list(wrapped.state_dict())
    x = torch.randn(1, 3, 32, 32)
    torch.testing.assert_close(segmentor(x, mode='tensor'), wrapped(x, mode='tensor'))


def test_segmentor_requires_protection():
    with pytest.raises(TypeError, match='protection'):
        MODELS.build(dict(type='KeyProtectedEncoderDecoder', **small_segmentor()))


# -------------------------------------------------------------- depth estimator
def small_depth_estimator(key, **protection) -> dict:
    """mmseg's DepthEstimator with a narrow ResNet-18 and VPD's depth head (no Stable Diffusion)."""
    from mmengine.config import ConfigDict
    return dict(
        type='KeyProtectedDepthEstimator',
        data_preprocessor=dict(type='SegDataPreProcessor', mean=[127.5] * 3, std=[127.5] * 3,
                               size=(64, 64)),
        backbone=small_resnet(base_channels=16),
        decode_head=dict(type='VPDDepthHead', in_channels=[16, 32, 64, 128], embed_dim=16,
                         feature_dim=128, num_deconv_filters=(16, 16, 16), max_depth=10),
        test_cfg=ConfigDict(mode='whole'),
        protection=dict(key=key, points='auto', encrypt_weights=True, **protection))


def predicted_depth(model, inputs: Tensor) -> Tensor:
    from mmseg.structures import SegDataSample
    size = tuple(inputs.shape[-2:])
    samples = [SegDataSample(metainfo=dict(img_shape=size, ori_shape=size, pad_shape=size))
               for _ in inputs]
    with torch.no_grad():
        return torch.stack([r.pred_depth_map.data for r in model.predict(inputs, samples)])


def test_depth_estimator_auto_points_conditions_and_sealed_weights(key, other_key):
    from mmseg_keyprotect.checkpoint import EncryptedWeightsError
    from mmseg_keyprotect.models.weight_encryption import sealed_state_dict
    from mmseg_keyprotect.protection import KeyCondition, Protection
    torch.manual_seed(0)
    model = MODELS.build(small_depth_estimator(key)).eval()
    protection = Protection.of(model)
    # every backbone stage the head reads, and the input of its one-channel depth layer
    assert protection.points == [f'backbone.layer{i}:output' for i in range(1, 5)] + \
        ['decode_head.depth_pred_layer.2:input']
    inputs = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for name, condition in (('correct', KeyCondition.correct()),
                            ('plain', KeyCondition.plain()),
                            ('incorrect', KeyCondition.incorrect(other_key))):
        with protection.applied(condition):
            outputs[name] = predicted_depth(model, inputs)
    assert outputs['correct'].shape == (2, 1, 64, 64)
    assert not torch.allclose(outputs['correct'], outputs['plain'])
    assert not torch.allclose(outputs['correct'], outputs['incorrect'])
    state = sealed_state_dict(model)
    weight = 'decode_head.depth_pred_layer.2.weight'
    assert not torch.equal(state[weight], model.get_parameter(weight))  # encrypted
    torch.manual_seed(1)
    fresh = MODELS.build(small_depth_estimator(key)).eval()
    fresh.load_state_dict(state)
    assert torch.equal(predicted_depth(fresh, inputs), outputs['correct'])
    stranger = MODELS.build(small_depth_estimator(other_key)).eval()
    with pytest.raises(EncryptedWeightsError, match='encrypted with the key of fingerprint'):
        stranger.load_state_dict(state)


# -------------------------------------------------------------- SAN's text encoder
#: Bytes of each tensor searched for in a file: 16 float32 values.
WINDOW = 16


def clear_tensors_in(data: bytes, tensors: Dict[str, Tensor]) -> Tuple[List[str], int]:
    """The names of ``tensors`` whose first 16 values appear in ``data`` in clear, and how many
    were searched (constant or tiny tensors cannot be told from other bytes: skipped)."""
    found, searched = [], 0
    for name, tensor in tensors.items():
        values = tensor.detach().reshape(-1)[:WINDOW].float()
        if len(values) < WINDOW or len(values.unique()) < WINDOW // 2:
            continue
        searched += 1
        if values.numpy().tobytes() in data:
            found.append(name)
    return found, searched


def small_san(key) -> dict:
    """mmseg's SAN config, shrunk as the sweep shrinks it, protected (one point; weights sealed)."""
    from mmengine.config import Config

    from mmseg_keyprotect.testing.sweep import FAMILIES, mmseg_config_dir, shrink_config
    entry = FAMILIES['san']
    cfg = Config.fromfile(str(mmseg_config_dir() / 'san' / entry['config']))
    model = shrink_config(cfg, 64, entry['overrides']).model
    model.update(type='KeyProtectedMultimodalEncoderDecoder',
                 protection=dict(key=key, points=['decode_head.rec_with_attnbias.proj:input'],
                                 encrypt_weights=True))
    return model


def test_san_seals_its_text_encoder(key, tmp_path):
    from mmseg_keyprotect.models.weight_encryption import sealed_state_dict
    from mmseg_keyprotect.testing.sweep import FAMILIES

    def build(seed: int):
        torch.manual_seed(seed)
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            model = MODELS.build(small_san(key)).eval()
        with torch.no_grad():  # left torch.empty for CLIP's weights
            for name, std in FAMILIES['san']['init_normal'].items():
                model.get_parameter(name).normal_(std=std)
        return model

    model = build(0)
    text = {name: tensor.detach().clone()
            for name, tensor in [*model.named_parameters(), *model.named_buffers()]
            if name.startswith('text_encoder.')}
    path = tmp_path / 'san.pth'
    torch.save(sealed_state_dict(model), path)
    stored = torch.load(path, weights_only=True)
    text = {name: tensor for name, tensor in text.items() if name in stored}  # not attn_mask
    assert len(text) > 10
    assert [name for name in text if torch.equal(stored[name], text[name])] == []
    found, searched = clear_tensors_in(path.read_bytes(), text)
    assert searched >= 5 and found == [], found
    fresh = build(1)  # other weights; the same outputs after loading: tests/e2e (slow)
    assert not torch.equal(fresh.get_parameter('text_encoder.text_projection'),
                           text['text_encoder.text_projection'])
    fresh.load_state_dict(stored)
    tensors = dict([*model.named_parameters(), *model.named_buffers()])
    differ = [name for name, tensor in [*fresh.named_parameters(), *fresh.named_buffers()]
              if not torch.equal(tensor, tensors[name])]
    assert differ == []
