"""Registry sweep: every component the plugin registers builds from a config dict.

A component added without an entry in ``EXAMPLES`` fails
``test_every_component_has_an_example``, so nothing is registered untested.
Loops and runners are built by a runner: ``tests/e2e/test_registry_runner_components.py``
builds those with :func:`build_example`, as this file builds the others.
"""
from __future__ import annotations

import warnings

import pytest
from mmengine.registry import Registry
from mmseg import registry as mmseg_registry

import mmseg_keyprotect  # noqa: F401
import mmseg_keyprotect.attacks  # noqa: F401  (registers AttackedSegmentor, whatever ran first)
from mmseg_keyprotect.protection import Protection

KEY = dict(seed=11, published=True)
_RESNET = dict(type='ResNetV1c', depth=18, out_indices=(3, ))
_HEAD = dict(type='FCNHead', in_channels=512, channels=16, num_convs=1, num_classes=2)
_OCR = dict(type='OCRHead', in_channels=512, channels=16, ocr_channels=8, num_classes=2)
_VAL = dict(ann_file='ImageSets/Segmentation/val.txt', pipeline=[])
# name -> (registry name, config dict). Keys come from a source, as in real configs.
# Values that need files name them as '{data_root}' (filled in with a generated dataset).
EXAMPLES = {
    'BlockShuffle': ('TRANSFORMS', dict(type='BlockShuffle', block_size=4, key=KEY)),
    'BlockNegPos': ('TRANSFORMS', dict(type='BlockNegPos', block_size=4, key=KEY)),
    'BlockFFX': ('TRANSFORMS', dict(type='BlockFFX', block_size=4, key=KEY)),
    'BlockScramble': ('TRANSFORMS', dict(type='BlockScramble', block_size=4, key=KEY,
                                         inner='BlockShuffle')),
    'ChannelPermutation': ('MODELS', dict(type='ChannelPermutation', num_channels=8, key=KEY,
                                          purpose='example')),
    'ChannelPermutationNeck': ('MODELS', dict(type='ChannelPermutationNeck',
                                              in_channels=[256, 512], indices=[1], key=KEY)),
    'KeyProtectedBackbone': ('MODELS', dict(type='KeyProtectedBackbone', backbone=_RESNET,
                                            key=KEY, points=['layer1:input'])),
    'KeyProtectedHead': ('MODELS', dict(type='KeyProtectedHead', head=_HEAD, key=KEY,
                                        points=['conv_seg:input'])),
    'KeyProtectedEncoderDecoder': ('MODELS', dict(
        type='KeyProtectedEncoderDecoder', backbone=_RESNET, decode_head=_HEAD,
        protection=dict(key=KEY, points=['decode_head.conv_seg:input']))),
    'KeyProtectedCascadeEncoderDecoder': ('MODELS', dict(
        type='KeyProtectedCascadeEncoderDecoder', num_stages=2, backbone=_RESNET,
        decode_head=[_HEAD, _OCR],
        protection=dict(key=KEY, points=['decode_head.1.conv_seg:input']))),
    'BlockCipherSegDataPreProcessor': ('MODELS', dict(
        type='BlockCipherSegDataPreProcessor', bgr_to_rgb=True, size=(64, 64),
        cipher=dict(type='BlockShuffle', block_size=4, key=KEY))),
    'SyntheticVOCDataset': ('DATASETS', dict(type='SyntheticVOCDataset',
                                             data_root='{data_root}', **_VAL)),
    # any folder of .jpg/.png pairs (here the synthetic dataset's) in the prepared layout
    'StanfordBackgroundDataset': ('DATASETS', dict(
        type='StanfordBackgroundDataset', data_root='{data_root}', pipeline=[],
        data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'))),
    'PerImageIoUMetric': ('METRICS', dict(type='PerImageIoUMetric', ignore_index=255)),
    'KeyConditionTestLoop': ('LOOPS', dict(type='KeyConditionTestLoop', incorrect=2)),
    'KeyConditionValLoop': ('LOOPS', dict(type='KeyConditionValLoop', plain=True)),
    'KeyProtectionHook': ('HOOKS', dict(type='KeyProtectionHook', strict=True)),
    'CheckpointSealHook': ('HOOKS', dict(type='CheckpointSealHook')),
    # built from a whole config (the fixture protected_runner): runner_type selects it
    'KeyProtectedRunner': ('RUNNERS', dict(runner_type='KeyProtectedRunner')),
    'KeyProtectedMultimodalEncoderDecoder': ('MODELS', None),  # _san_example()
    'KeyProtectedDepthEstimator': ('MODELS', dict(
        type='KeyProtectedDepthEstimator',
        backbone=dict(type='ResNetV1c', depth=18, base_channels=16, out_indices=(0, 1, 2, 3)),
        decode_head=dict(type='VPDDepthHead', in_channels=[16, 32, 64, 128], embed_dim=16,
                         feature_dim=128),
        protection=dict(key=KEY, points=['backbone.layer4:output']))),
    'AttackedSegmentor': ('MODELS', dict(
        type='AttackedSegmentor',
        segmentor=dict(type='EncoderDecoder', backbone=_RESNET, decode_head=_HEAD),
        adapters=dict(kind='adapter', points=['decode_head.conv_seg:input']), trainable=[])),
}


def _san_example() -> dict:
    """SAN (mmseg's config, made small as the sweep makes it), protected with one point."""
    from mmengine.config import Config

    from mmseg_keyprotect.testing.sweep import FAMILIES, mmseg_config_dir, shrink_config
    cfg = Config.fromfile(str(mmseg_config_dir() / 'san' / FAMILIES['san']['config']))
    model = shrink_config(cfg, 64, FAMILIES['san']['overrides']).model  # SAN reads cfg.attrs
    model.update(type='KeyProtectedMultimodalEncoderDecoder', protection=dict(
        key=KEY, points=['decode_head.rec_with_attnbias.proj:input']))
    return model


def plugin_components():
    """(registry name, component name) for everything registered by mmseg_keyprotect."""
    found = []
    for reg_name in dir(mmseg_registry):
        registry = getattr(mmseg_registry, reg_name)
        if not isinstance(registry, Registry):
            continue
        for name, obj in registry.module_dict.items():
            if getattr(obj, '__module__', '').startswith('mmseg_keyprotect'):
                found.append((reg_name, name))
    return sorted(set(found))


def test_plugin_registers_the_three_ciphers():
    names = {name for _, name in plugin_components()}
    assert {'BlockShuffle', 'BlockNegPos', 'BlockFFX'} <= names


def test_every_component_has_an_example():
    missing = [f'{reg}.{name}' for reg, name in plugin_components() if name not in EXAMPLES]
    assert not missing, f'add a config example to EXAMPLES for: {missing}'


#: Registries whose components a runner builds (tests/e2e/test_registry_runner_components.py).
RUNNER_BUILT = ('LOOPS', 'RUNNERS')


def build_example(reg_name: str, name: str, request: pytest.FixtureRequest) -> None:
    """Build ``EXAMPLES[name]`` from its registry and check it.

    Loops and runners come from the fixtures ``runner`` and ``protected_runner`` (in
    ``tests/e2e/test_registry_runner_components.py``); ``data_root`` is in ``tests/conftest.py``.
    """
    expected_registry, cfg = EXAMPLES[name]
    cfg = _san_example() if name == 'KeyProtectedMultimodalEncoderDecoder' else cfg
    assert reg_name == expected_registry
    cfg = {k: v.format(data_root=request.getfixturevalue('data_root'))
           if isinstance(v, str) else v for k, v in cfg.items()}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        if reg_name == 'RUNNERS':
            obj = request.getfixturevalue('protected_runner')
            assert '7361' not in obj.cfg.pretty_text  # the seed is redacted from what it writes
            assert {type(h).__name__ for h in obj.hooks} >= {'KeyProtectionHook',
                                                             'CheckpointSealHook'}
        elif reg_name == 'LOOPS':
            runner = request.getfixturevalue('runner')
            build = runner.build_test_loop if 'Test' in name else runner.build_val_loop
            obj = build(cfg)
        else:
            obj = getattr(mmseg_registry, reg_name).build(cfg)
    if isinstance(getattr(mmseg_registry, reg_name).get(name), type):
        assert type(obj).__name__ == name
    elif name == 'AttackedSegmentor':  # a builder: the segmentor itself, with its adapters
        assert len(obj.keyprotect_attack) == 1
    else:  # builder functions return the wrapped module itself, with its permutations
        assert Protection.of(obj).parts
    if name == 'KeyProtectedDepthEstimator':
        # mmseg's VPDDepthHead cannot be printed, protected or not (BaseDecodeHead.extra_repr
        # reads an ignore_index it never sets): the backbone holds the permutation
        obj = obj.backbone
    assert 'seed=11' not in repr(obj)


@pytest.mark.parametrize('reg_name, name', [(reg_name, name)
                                            for reg_name, name in plugin_components()
                                            if reg_name not in RUNNER_BUILT])
def test_component_builds_from_config(reg_name, name, request):
    build_example(reg_name, name, request)
