"""Every config under configs/feature_permutation/ loads, builds and protects what it says.

Each shipped config is loaded with mmengine (``mmseg::`` inheritance), shrunk
for a CPU (BN instead of SyncBN, no pretrained weights, few classes, 64x64
inputs) and checked: (a) correct, plain and incorrect keys give different
outputs; (b) the permutation lands on the intended tensor, with the channel
order derived from the key under the documented purpose; (c) a checkpoint
reproduces the outputs in a fresh process with the key, and is the plain model
without it (``tests/e2e/test_feature_permutation_checkpoints.py``, which uses the
helpers below); (d) the ``state_dict`` has exactly the unprotected model's keys;
(e) gradients flow in training. ``EXPECTED`` states, per config, the tensor our
reading of the paper (or of the config's comment) says is permuted; a config
without an entry fails.
"""
from __future__ import annotations

import copy
import re
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List, Optional, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.structures import PixelData
from mmseg.registry import MODELS
from mmseg.structures import SegDataSample
from torch import Tensor, nn

from mmseg_keyprotect.keyed import KeyedComponent
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import ChannelPermutation, ChannelPermutationNeck

REPO = Path(__file__).resolve().parents[3]
CONFIG_DIR = REPO / 'configs' / 'feature_permutation'
CONFIGS = sorted(p.name for p in CONFIG_DIR.glob('*.py'))
NUM_CLASSES = 3
SIZE = 64
KEY_ENV = 'KP_KEY'


@dataclass(frozen=True)
class Point:
    """A permuted tensor: module path in the segmentor, side, channels, key purpose."""

    path: str
    where: str
    channels: int
    purpose: str
    index: Optional[int] = None
    channel_dim: int = 1


def fcn(model: int) -> str:
    return f'fcn_r50-d8_perm-m{model}_100e_voc12-256x256.py'


# Paper 2, Fig. 3 on mmseg's FCN-R50-D8: 1 = stem output (input of layer1),
# 2..5 = outputs of layer1..4, 6 = input of decode_head.conv_seg.
EXPECTED: Dict[str, List[Point]] = {
    fcn(1): [Point('backbone.layer1', 'input', 64, 'backbone.layer1:input')],
    fcn(2): [Point('backbone.layer1', 'output', 256, 'backbone.layer1:output')],
    fcn(3): [Point('backbone.layer2', 'output', 512, 'backbone.layer2:output')],
    fcn(4): [Point('backbone.layer3', 'output', 1024, 'backbone.layer3:output')],
    fcn(5): [Point('backbone.layer4', 'output', 2048, 'backbone.layer4:output')],
    fcn(6): [Point('decode_head.conv_seg', 'input', 512, 'decode_head.conv_seg:input')],
    'deeplabv3_r50-d8_perm-m6_4xb4-20k_voc12aug-512x512.py':
    [Point('decode_head.conv_seg', 'input', 512, 'decode_head.conv_seg:input')],
    'pspnet_r50-d8_perm-neck3_4xb4-20k_voc12aug-512x512.py':
    [Point('neck', 'input', 2048, 'neck:input[3]', index=3)],
    'upernet_r50_perm-m1m5_4xb4-20k_voc12aug-512x512.py': [
        Point('backbone.layer1', 'input', 64, 'backbone.layer1:input'),
        Point('backbone.layer4', 'output', 2048, 'backbone.layer4:output')
    ],
    'segformer_mit-b0_perm-s1_8xb2-160k_ade20k-512x512.py': [
        Point('backbone.layers.0.2', 'output', 32, 'backbone.layers.0.2:output', channel_dim=-1)
    ],
    'ocrnet_hr18_perm-m6_4xb4-20k_voc12aug-512x512.py':
    [Point('decode_head.1.conv_seg', 'input', 512, 'decode_head.1.conv_seg:input')],
}

UNPROTECTED_TYPES = {
    'KeyProtectedEncoderDecoder': 'EncoderDecoder',
    'KeyProtectedCascadeEncoderDecoder': 'CascadeEncoderDecoder',
}


# ------------------------------------------------------------------ helpers
def shrink(cfg: Any, num_classes: Optional[int] = NUM_CLASSES) -> Any:
    """CPU-sized copy of a model config: BN, no pretrained weights, ``num_classes`` classes."""
    if isinstance(cfg, list):
        return [shrink(v, num_classes) for v in cfg]
    if not isinstance(cfg, dict):
        return cfg
    out = {k: shrink(v, num_classes) for k, v in cfg.items()}
    if out.get('type') == 'SyncBN':
        out['type'] = 'BN'
    if 'num_classes' in out and num_classes is not None:
        out['num_classes'] = num_classes
    for field in ('pretrained', 'init_cfg'):
        if field in out:
            out[field] = None
    return out


def unprotect(cfg: Any) -> Any:
    """The same model config without any protection component."""
    if isinstance(cfg, list):
        return [unprotect(v) for v in cfg]
    if not isinstance(cfg, dict):
        return cfg
    kind = cfg.get('type')
    if kind in ('KeyProtectedBackbone', 'KeyProtectedHead'):
        inner = 'backbone' if kind == 'KeyProtectedBackbone' else 'head'
        extra = {k: v for k, v in cfg.items()
                 if k not in ('type', inner, 'key', 'points', 'prefix')}
        return unprotect({**cfg[inner], **extra})
    out = {k: unprotect(v) for k, v in cfg.items()
           if k != 'protection' and not (k == 'neck' and v.get('type') == 'ChannelPermutationNeck')}
    if kind in UNPROTECTED_TYPES:
        out['type'] = UNPROTECTED_TYPES[kind]
    return out


def load_model_cfg(name: str) -> dict:
    return shrink(Config.fromfile(CONFIG_DIR / name).model.to_dict())


def build(model_cfg: dict, key: Optional[SecretKey]) -> nn.Module:
    with pytest.MonkeyPatch.context() as mp:
        if key is None:
            mp.delenv(KEY_ENV, raising=False)
        else:
            mp.setenv(KEY_ENV, key.export_hex())
        return MODELS.build(copy.deepcopy(model_cfg))


def set_condition(model: nn.Module, key: Optional[SecretKey]) -> None:
    """What key-condition evaluation does: switch every keyed component."""
    for module in model.modules():
        if isinstance(module, KeyedComponent):
            module.use_key(key)


def alpha(key: SecretKey, point: Point) -> Tensor:
    """The documented derivation, computed here independently of the module."""
    purpose = f'channel/{point.purpose}/c={point.channels}'
    return torch.from_numpy(key.permutation(purpose, point.channels))


def forward(model: nn.Module, x: Tensor) -> Tensor:
    with torch.no_grad():
        return model(x, mode='tensor')


def samples(batch: int) -> List[SegDataSample]:
    out = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(SIZE, SIZE), pad_shape=(SIZE, SIZE),
                                             ori_shape=(SIZE, SIZE)))
        sample.gt_sem_seg = PixelData(data=torch.randint(0, NUM_CLASSES, (1, SIZE, SIZE)))
        out.append(sample)
    return out


def capture(model: nn.Module, point: Point, run: Callable[[], Any]) -> Tuple[Tensor, Tensor]:
    """The tensor at ``point`` before and after the protection acted on it."""
    module = model.get_submodule(point.path)
    store: Dict[str, Tensor] = {}

    def pick(name: str, value: Any) -> None:
        store[name] = value if point.index is None else value[point.index]

    if isinstance(module, ChannelPermutationNeck):
        handles = [module.register_forward_pre_hook(lambda m, a: pick('before', a[0])),
                   module.register_forward_hook(lambda m, a, o: pick('after', o))]
    elif point.where == 'input':
        handles = [module.register_forward_pre_hook(lambda m, a: pick('before', a[0]),
                                                    prepend=True),
                   module.register_forward_pre_hook(lambda m, a: pick('after', a[0]))]
    else:
        handles = [module.register_forward_hook(lambda m, a, o: pick('before', o), prepend=True),
                   module.register_forward_hook(lambda m, a, o: pick('after', o))]
    try:
        run()
    finally:
        for handle in handles:
            handle.remove()
    return store['before'], store['after']


@pytest.fixture(scope='module', params=CONFIGS)
def built(request) -> SimpleNamespace:
    """Protected and unprotected model (same weights) for one config, in eval mode."""
    name = request.param
    key, other = SecretKey.generate(), SecretKey.generate()
    torch.manual_seed(0)
    model_cfg = load_model_cfg(name)
    protected = build(model_cfg, key).eval()
    unprotected = build(unprotect(model_cfg), None).eval()
    torch.manual_seed(1)
    return SimpleNamespace(name=name, key=key, other=other, protected=protected,
                           unprotected=unprotected, x=torch.randn(1, 3, SIZE, SIZE))


# -------------------------------------------------------------------- tests
def test_every_config_has_an_expectation():
    assert CONFIGS, f'no configs in {CONFIG_DIR}'
    assert set(CONFIGS) == set(EXPECTED)


@pytest.mark.parametrize('name', CONFIGS)
def test_config_inherits_mmseg_and_names_only_a_key_source(name):
    cfg = Config.fromfile(CONFIG_DIR / name)
    assert cfg.custom_imports == dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                                      allow_failed_imports=False)
    assert cfg.val_dataloader.dataset.type in ('PascalVOCDataset', 'ADE20KDataset')
    assert cfg.default_scope == 'mmseg'
    text = cfg.pretty_text
    assert f"env='{KEY_ENV}'" in text
    assert not re.search(r'[0-9a-fA-F]{64}', text)


def test_builds_with_the_expected_points(built):
    forward(built.protected, built.x)  # sizes lazily inferred channel counts
    found = sorted((m.purpose, m.num_channels, m.channel_dim)
                   for m in built.protected.modules() if isinstance(m, ChannelPermutation))
    expected = sorted((p.purpose, p.channels, p.channel_dim) for p in EXPECTED[built.name])
    assert found == expected
    assert built.key.export_hex() not in repr(built.protected)


def test_a_conditions_give_different_outputs(built):
    model, x = built.protected, built.x
    outputs = {}
    for condition, key in (('correct', built.key), ('plain', None), ('incorrect', built.other)):
        set_condition(model, key)
        outputs[condition] = forward(model, x)
    set_condition(model, built.key)
    assert torch.equal(forward(model, x), outputs['correct'])
    for a, b in (('correct', 'plain'), ('correct', 'incorrect'), ('plain', 'incorrect')):
        assert not torch.allclose(outputs[a], outputs[b], atol=1e-6), f'{a} == {b}'


@pytest.mark.parametrize('condition', ['correct', 'plain', 'incorrect'])
def test_b_permutation_lands_on_the_intended_tensor(built, condition):
    model = built.protected
    key = {'correct': built.key, 'plain': None, 'incorrect': built.other}[condition]
    set_condition(model, key)
    try:
        for point in EXPECTED[built.name]:
            before, after = capture(model, point, lambda: forward(model, built.x))
            assert before.shape[point.channel_dim] == point.channels
            expected = before
            if key is not None:
                expected = before.index_select(point.channel_dim, alpha(key, point))
            assert torch.equal(after, expected)
            if key is not None:
                assert not torch.equal(after, before)
    finally:
        set_condition(model, built.key)


def test_d_state_dict_keys_are_the_unprotected_ones(built):
    protected, unprotected = built.protected.state_dict(), built.unprotected.state_dict()
    assert list(protected) == list(unprotected)
    assert all(protected[k].shape == unprotected[k].shape for k in protected)
    plain = copy.deepcopy(built.unprotected)
    plain.load_state_dict(protected, strict=True)
    set_condition(built.protected, None)
    try:
        torch.testing.assert_close(forward(built.protected, built.x), forward(plain, built.x))
    finally:
        set_condition(built.protected, built.key)


def test_e_gradients_flow_in_training(built):
    model = copy.deepcopy(built.protected).train()
    x = torch.randn(2, 3, SIZE, SIZE)
    loss, _ = model.parse_losses(model(x, samples(2), mode='loss'))
    loss.backward()
    trainable = {n for n, p in model.named_parameters() if p.requires_grad}
    with_grad = {n for n, p in model.named_parameters()
                 if p.grad is not None and torch.isfinite(p.grad).all() and p.grad.abs().sum() > 0}
    assert trainable - with_grad == set()


@pytest.mark.parametrize('name', [fcn(6), 'deeplabv3_r50-d8_perm-m6_4xb4-20k_voc12aug-512x512.py'])
def test_cfg_options_reach_the_inherited_fields(name, key):
    cfg = Config.fromfile(CONFIG_DIR / name)
    cfg.merge_from_dict({'model.decode_head.num_classes': 5})
    model = build(shrink(cfg.model.to_dict(), num_classes=None), key)
    assert model.decode_head.num_classes == 5


def test_building_without_the_key_fails_clearly():
    with pytest.raises(KeyError, match=KEY_ENV):
        build(load_model_cfg(fcn(6)), None)
