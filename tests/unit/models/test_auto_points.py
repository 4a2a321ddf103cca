"""points='auto' and the named presets: points resolved from the built model."""
from __future__ import annotations

from typing import Any, Dict, List

import pytest
import torch
from mmseg.registry import MODELS
from torch import nn

from mmseg_keyprotect.models import auto_points
from mmseg_keyprotect.models.auto_points import (MASK_HEAD_POINTS, HeadInfo, ModelTrace,
                                                 ModuleCall, backbone_stage_points,
                                                 classifier_input_points,
                                                 mask_classification_points, resolve_points,
                                                 trace_segmentor)
from mmseg_keyprotect.models.points import POINTS_ATTR, PointSpec
from mmseg_keyprotect.protection.conditions import KeyCondition, make_conditions
from mmseg_keyprotect.protection import Protection

BN = dict(type='BN')


def fcn_r18(key_file, points: Any, **model: Any) -> Dict[str, Any]:
    """An FCN-R18 with an auxiliary head: decode reads output 3, auxiliary output 2."""
    cfg = dict(
        type='KeyProtectedEncoderDecoder',
        backbone=dict(type='ResNetV1c', depth=18, out_indices=(0, 1, 2, 3), norm_cfg=BN),
        decode_head=dict(type='FCNHead', in_channels=512, in_index=3, channels=16,
                         num_convs=1, num_classes=3, norm_cfg=BN),
        auxiliary_head=dict(type='FCNHead', in_channels=256, in_index=2, channels=8,
                            num_convs=1, num_classes=3, norm_cfg=BN),
        protection=dict(key=dict(file=str(key_file)), points=points))
    cfg.update(model)
    return cfg


def segformer_tiny(key_file, points: Any) -> Dict[str, Any]:
    """A MiT backbone with token (N, L, C) stages and a SegFormer head."""
    return dict(
        type='KeyProtectedEncoderDecoder',
        backbone=dict(type='MixVisionTransformer', in_channels=3, embed_dims=8,
                      num_stages=4, num_layers=[1, 1, 1, 1], num_heads=[1, 2, 4, 8],
                      patch_sizes=[7, 3, 3, 3], sr_ratios=[8, 4, 2, 1],
                      out_indices=(0, 1, 2, 3), mlp_ratio=2),
        decode_head=dict(type='SegformerHead', in_channels=[8, 16, 32, 64],
                         in_index=[0, 1, 2, 3], channels=16, num_classes=3, norm_cfg=BN),
        protection=dict(key=dict(file=str(key_file)), points=points))


def names(model: nn.Module) -> List[str]:
    return [p.purpose for p in getattr(model, POINTS_ATTR)]


# ------------------------------------------------------------- resolved from real models
def test_auto_on_fcn_picks_used_stages_and_both_classifiers(key_file):
    model = MODELS.build(fcn_r18(key_file, 'auto'))
    assert names(model) == ['backbone.layer3:output', 'backbone.layer4:output',
                            'decode_head.conv_seg:input', 'auxiliary_head.conv_seg:input']
    channels = [p.num_channels for p in getattr(model, POINTS_ATTR)]
    assert channels == [256, 512, 16, 8]  # sized when built, not on the first forward


def test_presets_select_their_part(key_file):
    stages = MODELS.build(fcn_r18(key_file, 'backbone-stages'))
    assert names(stages) == ['backbone.layer3:output', 'backbone.layer4:output']
    heads = MODELS.build(fcn_r18(key_file, 'classifier-input'))
    assert names(heads) == ['decode_head.conv_seg:input', 'auxiliary_head.conv_seg:input']
    recommended = MODELS.build(fcn_r18(key_file, 'recommended'))
    assert names(recommended) == names(MODELS.build(fcn_r18(key_file, 'auto')))


def test_preset_mixes_with_explicit_points(key_file):
    model = MODELS.build(fcn_r18(key_file, ['backbone.layer1:input', 'classifier-input']))
    assert names(model) == ['backbone.layer1:input', 'decode_head.conv_seg:input',
                            'auxiliary_head.conv_seg:input']


def test_with_a_neck_every_backbone_output_is_a_point(key_file):
    cfg = fcn_r18(key_file, 'backbone-stages',
                  neck=dict(type='FPN', in_channels=[64, 128, 256, 512], out_channels=16,
                            num_outs=4),
                  decode_head=dict(type='FPNHead', in_channels=[16] * 4, in_index=[0, 1, 2, 3],
                                   feature_strides=[4, 8, 16, 32], channels=16,
                                   num_classes=3, norm_cfg=BN))
    cfg.pop('auxiliary_head')
    model = MODELS.build(cfg)
    assert names(model) == [f'backbone.layer{i}:output' for i in (1, 2, 3, 4)]


def test_token_features_are_found_with_channels_last(key_file):
    model = MODELS.build(segformer_tiny(key_file, 'backbone-stages'))
    perms = getattr(model, POINTS_ATTR)
    # the stage's final LayerNorm (N, L, C), before mmseg reshapes it to (N, C, H, W)
    assert [p.purpose for p in perms] == [f'backbone.layers.{i}.2:output' for i in range(4)]
    assert [p.channel_dim for p in perms] == [-1] * 4
    assert [p.num_channels for p in perms] == [8, 16, 32, 64]


def test_cascade_gets_every_stage_classifier(key_file):
    cfg = dict(
        type='KeyProtectedCascadeEncoderDecoder', num_stages=2,
        backbone=dict(type='ResNetV1c', depth=18, out_indices=(2, 3), norm_cfg=BN),
        decode_head=[
            dict(type='FCNHead', in_channels=512, in_index=1, channels=8, num_convs=1,
                 num_classes=3, norm_cfg=BN),
            dict(type='OCRHead', in_channels=512, in_index=1, channels=16, ocr_channels=8,
                 num_classes=3, norm_cfg=BN)],
        protection=dict(key=dict(file=str(key_file)), points='auto'))
    model = MODELS.build(cfg)
    assert names(model) == ['backbone.layer4:output', 'decode_head.0.conv_seg:input',
                            'decode_head.1.conv_seg:input']


def outputs_under_conditions(model, x):
    """``model(x, mode='tensor')`` under the correct key, plain and one wrong key."""
    wrong = make_conditions(correct=False, plain=False, incorrect=1, seed=0)[0]
    outs = []
    with torch.no_grad():
        for condition in (KeyCondition.correct(), KeyCondition.plain(), wrong):
            with Protection.of(model).applied(condition):
                outs.append(model(x, mode='tensor'))
    return outs


def test_auto_model_runs_under_conditions_and_is_described(key_file):
    model = MODELS.build(fcn_r18(key_file, 'auto')).eval()
    outs = outputs_under_conditions(model, torch.randn(1, 3, 64, 64))
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
    points = [e['point'] for e in Protection.of(model).describe() if e['type'] == 'PointPermutation']
    assert sorted(points) == sorted(names(model))


def test_explicit_points_are_not_traced(key_file, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError('traced')
    monkeypatch.setattr(auto_points, 'trace_segmentor', fail)
    model = MODELS.build(fcn_r18(key_file, ['decode_head.conv_seg:input']))
    assert names(model) == ['decode_head.conv_seg:input']


def test_chosen_points_are_logged(key_file, monkeypatch):
    messages = []
    monkeypatch.setattr(auto_points, 'print_log', lambda msg, **kw: messages.append(msg))
    MODELS.build(fcn_r18(key_file, 'classifier-input'))
    assert messages == ["KeyProtectedEncoderDecoder: points='classifier-input' resolved to "
                        '[decode_head.conv_seg:input, auxiliary_head.conv_seg:input]']


def test_trace_leaves_rng_mode_and_weights_alone(key_file):
    cfg = fcn_r18(key_file, ['decode_head.conv_seg:input'])
    model = MODELS.build(cfg).train()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    rng = torch.random.get_rng_state()
    trace = trace_segmentor(model)
    assert torch.equal(rng, torch.random.get_rng_state())
    assert model.training
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert [h.path for h in trace.heads] == ['decode_head', 'auxiliary_head']


# -------------------------------------------------------------- pure selection functions
def _call(path: str, module: nn.Module, x: torch.Tensor) -> ModuleCall:
    return ModuleCall(path, module, x, module(x))


def test_backbone_output_made_outside_any_module_is_taken_at_the_backbone():
    conv = nn.Conv2d(3, 6, 1)
    stage = _call('backbone.conv', conv, torch.randn(1, 3, 4, 4))
    trace = ModelTrace(calls=[stage], backbone_outputs=[stage.output * 2],
                       heads=[HeadInfo('decode_head', 2, (0, ))])
    assert backbone_stage_points(trace) == [PointSpec('backbone', 'output', 0, 6, 1)]
    trace.backbone_returns_sequence = False
    assert backbone_stage_points(trace) == [PointSpec('backbone', 'output', None, 6, 1)]


def test_shallowest_module_returning_the_output_is_chosen_and_shared_ones_skipped():
    inner = nn.Conv2d(3, 6, 1)
    x = torch.randn(1, 3, 4, 4)
    y = inner(x)
    relu = nn.ReLU()
    calls = [ModuleCall('backbone.stage.0.conv', inner, x, y),
             ModuleCall('backbone.stage', nn.Identity(), x, [x, y]),
             ModuleCall('backbone.act', relu, y, y), ModuleCall('backbone.act', relu, y, y)]
    trace = ModelTrace(calls=calls, backbone_outputs=[x, y],
                       heads=[HeadInfo('decode_head', 2, (-1, ))])
    # only output 1 (in_index=-1) is used; backbone.act is called twice, so not a point
    assert backbone_stage_points(trace) == [PointSpec('backbone.stage', 'output', 1, 6, 1)]


def test_linear_classifier_is_permuted_on_the_last_axis():
    x = torch.randn(1, 10, 12)
    trace = ModelTrace(calls=[_call('decode_head.proj', nn.Linear(12, 12), x),
                              _call('decode_head.cls', nn.Linear(12, 5), x)],
                       heads=[HeadInfo('decode_head', 5, None),
                              HeadInfo('auxiliary_head', 5, None, error='needs metas')])
    assert classifier_input_points(trace) == [PointSpec('decode_head.cls', 'input', None, 12, -1)]


def test_vit_output_with_class_token_is_placed_at_the_token_sequence():
    """``[feature map, class token]`` outputs: the layer whose tokens hold both (DPT, SAN)."""
    layer = nn.Linear(6, 6)
    tokens = layer(torch.randn(2, 1 + 4 * 5, 6))
    feature = tokens[:, 1:].transpose(1, 2).reshape(2, 6, 4, 5)
    trace = ModelTrace(calls=[ModuleCall('backbone.layers.2', layer, None, tokens)],
                       backbone_outputs=[[feature, tokens[:, 0]]],
                       heads=[HeadInfo('decode_head', 2, (0, ))])
    assert backbone_stage_points(trace) == [PointSpec('backbone.layers.2', 'output', None, 6, -1)]
    # a nested output no module returns is not addressable: no point rather than a wrong one
    trace.calls = []
    assert backbone_stage_points(trace) == []


def test_image_encoder_of_a_multimodal_segmentor_is_the_backbone():
    conv = nn.Conv2d(3, 6, 1)
    stage = _call('image_encoder.conv', conv, torch.randn(1, 3, 4, 4))
    trace = ModelTrace(calls=[stage], backbone_outputs=[torch.randn(1, 3, 4, 4), stage.output],
                       heads=[HeadInfo('decode_head', 2, (-1, ), error='needs text')],
                       backbone_path='image_encoder')
    # every image feature is read by a multimodal head, whatever its in_index says
    assert backbone_stage_points(trace) == [
        PointSpec('image_encoder', 'output', 0, 3, 1),
        PointSpec('image_encoder.conv', 'output', None, 6, 1)]


def test_mask_heads_get_pixel_decoder_query_and_mask_embedding_points():
    features, query = torch.randn(2, 8, 4, 4), torch.randn(2, 5, 16)
    calls = [ModuleCall('decode_head.pixel_decoder', nn.Identity(), None,
                        (features, [features])),
             ModuleCall('decode_head.cls_embed', nn.Linear(16, 4), query, None),
             ModuleCall('decode_head.mask_embed', nn.Identity(), query, query[..., :8]),
             ModuleCall('decode_head.cls_embed', nn.Linear(16, 4), query, None)]  # next layer
    trace = ModelTrace(decode_calls=calls, mask_heads=[('decode_head', 'Mask2FormerHead')],
                       heads=[HeadInfo('decode_head', 4, None, type_name='Mask2FormerHead')])
    assert mask_classification_points(trace) == [
        PointSpec('decode_head.pixel_decoder', 'output', 0, 8, 1),
        PointSpec('decode_head.cls_embed', 'input', None, 16, -1),
        PointSpec('decode_head.mask_embed', 'output', None, 8, -1)]
    # the per-pixel classifier search skips mask heads (no conv_seg; a 4-channel layer is not one)
    trace.calls = [ModuleCall('decode_head.x', nn.Conv2d(8, 4, 1), features, None)]
    assert classifier_input_points(trace) == []
    # without a decode pass (it failed) there are no mask points, not wrong ones
    assert mask_classification_points(ModelTrace(heads=trace.heads)) == []


def test_every_mask_head_point_says_why():
    assert set(MASK_HEAD_POINTS) == {'Mask2FormerHead', 'MaskFormerHead', 'KernelUpdateHead',
                                     'SegmenterMaskTransformerHead', 'SideAdapterCLIPHead'}
    for points in MASK_HEAD_POINTS.values():
        for point in points:
            assert point.where in ('input', 'output') and len(point.why) > 40


def test_auto_on_knet_keys_the_kernel_update_heads(key_file):
    """K-Net (mmseg's own heads): its updated kernels are points, besides the backbone."""
    num_classes, channels = 3, 16
    update = dict(type='KernelUpdateHead', num_classes=num_classes, num_ffn_fcs=2,
                  num_heads=2, num_mask_fcs=1, feedforward_channels=32, in_channels=channels,
                  out_channels=channels, dropout=0.0, conv_kernel_size=1, ffn_act_cfg=dict(
                      type='ReLU', inplace=True), with_ffn=True, feat_transform_cfg=dict(
                          conv_cfg=dict(type='Conv2d'), act_cfg=None),
                  kernel_updator_cfg=dict(type='KernelUpdator', in_channels=channels,
                                          feat_channels=channels, out_channels=channels,
                                          act_cfg=dict(type='ReLU', inplace=True),
                                          norm_cfg=dict(type='LN')))
    cfg = fcn_r18(key_file, 'auto', auxiliary_head=None)
    cfg['decode_head'] = dict(
        type='IterativeDecodeHead', num_stages=2, kernel_update_head=[update, update],
        kernel_generate_head=dict(type='FCNHead', in_channels=512, in_index=3,
                                  channels=channels, num_convs=1, num_classes=num_classes,
                                  norm_cfg=BN))
    model = MODELS.build(cfg)
    # IterativeDecodeHead has no in_index of its own: every backbone stage counts as read
    assert names(model) == [f'backbone.layer{i}:output' for i in (1, 2, 3, 4)] + [
                            'decode_head.kernel_generate_head.conv_seg:input',
                            'decode_head.kernel_update_head.0.fc_mask:output',
                            'decode_head.kernel_update_head.1.fc_mask:output']


# ------------------------------------------------------------------------- bad input
@pytest.mark.parametrize('bad, hint', [('recomended', "did you mean 'recommended'"),
                                       ('backbone-stage', "did you mean 'backbone-stages'"),
                                       ('all points!', 'presets are')])
def test_unknown_preset_is_a_value_error_naming_it(key_file, bad, hint):
    with pytest.raises(ValueError, match='unknown points preset') as info:
        MODELS.build(fcn_r18(key_file, bad))
    assert repr(bad) in str(info.value) and hint in str(info.value)


def test_preset_that_selects_nothing_names_the_preset(key_file, monkeypatch):
    model = MODELS.build(fcn_r18(key_file, ['decode_head.conv_seg:input']))
    monkeypatch.setattr(auto_points, 'trace_segmentor', lambda *a, **k: ModelTrace(
        heads=[HeadInfo('decode_head', 3, None, error='TypeError: needs img metas')]))
    with pytest.raises(ValueError, match=r"points='classifier-input' selects no point.*"
                       r'needs img metas'):
        resolve_points(model, 'classifier-input')


def test_model_without_backbone_is_a_value_error():
    with pytest.raises(ValueError, match='no backbone module'):
        resolve_points(nn.Sequential(nn.Conv2d(3, 3, 1)), 'auto')
