"""AttackedSegmentor: what is trained, what stays frozen, where the adapters act."""
from __future__ import annotations

import pytest
import torch
from mmseg.registry import MODELS
from torch import nn

from mmseg_keyprotect.attacks.surface import frozen_norm_layers

_BACKBONE = dict(type='ResNetV1c', depth=18, base_channels=8, stem_channels=8,
                 out_indices=(3, ), strides=(1, 2, 1, 1), dilations=(1, 1, 2, 4))
_HEAD = dict(type='FCNHead', in_channels=64, channels=8, num_convs=1, num_classes=3,
             in_index=0)
_SEG = dict(type='EncoderDecoder', backbone=_BACKBONE, decode_head=_HEAD,
            data_preprocessor=dict(type='SegDataPreProcessor', size=(32, 32)))


def build(**kwargs) -> nn.Module:
    torch.manual_seed(0)
    return MODELS.build(dict(type='AttackedSegmentor', segmentor=_SEG, **kwargs))


def trainable_names(model):
    return {n for n, p in model.named_parameters() if p.requires_grad}


def test_head_only_trains_only_the_named_modules():
    model = build(trainable=['decode_head.conv_seg'])
    assert trainable_names(model) == {'decode_head.conv_seg.weight', 'decode_head.conv_seg.bias'}
    norms = frozen_norm_layers(model)
    assert norms and all(isinstance(n, nn.BatchNorm2d) for n in norms)
    model.train()
    before = model.backbone.stem[1].running_mean.clone()
    model(torch.randn(2, 3, 32, 32), mode='tensor')
    assert not model.backbone.stem[1].training
    assert torch.equal(model.backbone.stem[1].running_mean, before)


def test_adapters_only_and_identity_at_start():
    plain = build()
    model = build(adapters=dict(kind='adapter', points=['decode_head.conv_seg:input']),
                  trainable=[])
    assert trainable_names(model) == {'keyprotect_attack.0.module.weight',
                                      'keyprotect_attack.0.module.offset'}
    assert model.keyprotect_attack[0].module.weight.shape == (8, 8)  # sized by the probe
    model.load_state_dict(plain.state_dict(), strict=False)
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(model.eval()(x, mode='tensor'), plain.eval()(x, mode='tensor'),
                          atol=1e-5)


def test_all_trainable_by_default_and_bad_paths():
    model = build()
    assert all(p.requires_grad for p in model.parameters())
    assert not frozen_norm_layers(model)
    with pytest.raises(ValueError, match=r"trainable: no module at \['decode_head.nope'\]"):
        build(trainable=['decode_head.nope'])
    with pytest.raises(ValueError, match="no module at path 'backbone.nope'"):
        build(adapters=dict(kind='adapter', points=['backbone.nope']), trainable=[])


def test_auto_and_recorded_token_points_on_segformer():
    """'auto' resolves on the attacker's model; names from a descriptor keep channel_dim=-1."""
    from ..posthoc.families import family_cfg
    segmentor = family_cfg('segformer').model
    names = ['backbone.layers.0.2:output', 'decode_head.conv_seg:input']
    for points, recorded in ((['auto'], False), (names, True)):
        model = MODELS.build(dict(type='AttackedSegmentor', segmentor=segmentor, trainable=[],
                                  adapters=dict(kind='adapter', points=points,
                                                recorded=recorded)))
        dims = {a.point.name(): a.point.channel_dim for a in model.keyprotect_attack}
        assert dims['backbone.layers.0.2:output'] == -1
        assert dims['decode_head.conv_seg:input'] == 1
