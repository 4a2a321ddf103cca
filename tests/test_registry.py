"""Registry sweep: every component the plugin registers builds from a config dict.

A component added without an entry in ``EXAMPLES`` fails
``test_every_component_has_an_example``, so nothing is registered untested.
"""
from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.registry import Registry
from mmengine.runner import Runner
from mmseg import registry as mmseg_registry

import mmseg_keyprotect  # noqa: F401
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
    'PerImageIoUMetric': ('METRICS', dict(type='PerImageIoUMetric', ignore_index=255)),
    'KeyConditionTestLoop': ('LOOPS', dict(type='KeyConditionTestLoop', incorrect=2)),
    'KeyConditionValLoop': ('LOOPS', dict(type='KeyConditionValLoop', plain=True)),
    'KeyProtectionHook': ('HOOKS', dict(type='KeyProtectionHook', strict=True)),
    'CheckpointSealHook': ('HOOKS', dict(type='CheckpointSealHook')),
    # built from a whole config (the fixture protected_runner): runner_type selects it
    'KeyProtectedRunner': ('RUNNERS', dict(runner_type='KeyProtectedRunner')),
    'AttackedSegmentor': ('MODELS', dict(
        type='AttackedSegmentor',
        segmentor=dict(type='EncoderDecoder', backbone=_RESNET, decode_head=_HEAD),
        adapters=dict(kind='adapter', points=['decode_head.conv_seg:input']), trainable=[])),
}


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


@pytest.fixture(scope='module')
def data_root(synthetic_voc) -> str:
    return str(synthetic_voc)


@pytest.fixture(scope='module')
def runner(data_root, tmp_path_factory) -> Runner:
    """A real runner (demo config) for components built by a runner, such as loops."""
    cfg = Config.fromfile(str(Path(__file__).parents[1] / 'configs' / 'demo' /
                              'fcn_r18-d8_baseline_demo.py'))
    cfg.work_dir = str(tmp_path_factory.mktemp('work'))
    cfg.experiment_name = f'registry_{uuid.uuid4().hex[:8]}'
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].dataset.data_root = data_root
        cfg[split].num_workers = 0
        cfg[split].persistent_workers = False
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return Runner.from_cfg(cfg)


@pytest.fixture(scope='module')
def protected_runner(data_root, tmp_path_factory) -> Runner:
    """The seed-key demo config (a published key) built by its runner_type."""
    cfg = Config.fromfile(str(Path(__file__).parents[1] / 'configs' / 'demo' /
                              'fcn_r18-d8_perm-m6-seedkey_demo.py'))
    cfg.work_dir = str(tmp_path_factory.mktemp('work'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return mmseg_registry.RUNNERS.build(cfg)


@pytest.mark.parametrize('reg_name, name', plugin_components())
def test_component_builds_from_config(reg_name, name, request):
    expected_registry, cfg = EXAMPLES[name]
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
    assert 'seed=11' not in repr(obj)
