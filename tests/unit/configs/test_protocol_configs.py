"""The paper-protocol configs, and every other config under configs/.

* every config (outside ``_base_`` folders) loads with mmengine, ``mmseg::``
  inheritance included, and its model builds with mmseg's ``MODELS`` on a CPU
  (SyncBN -> BN, no pretrained weights, the key given directly);
* the baseline, block-encryption and Model-1..6 configs hold what both papers
  state: SGD lr 0.1 / momentum 0.9 / weight decay 0.005, 100 epochs, SGDR
  restarting every 10 epochs down to 1e-4, batch 8 x 32 = 256, 256x256 inputs,
  1318 train / 146 development names from the shipped lists, VOC val for testing;
* the cipher sits at the documented pipeline indices, and ``--cfg-options``
  (parsed by mmengine's ``DictAction``, applied by ``merge_from_dict``, as in
  mmseg's tools) changes block size, cipher and point;
* the generated children and split lists match their generators;
* once, the real pipelines of block-cipher configs turn a 300x200 VOC-layout
  image into an encrypted 256x256 input.
"""
from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import math
import os
import random
import re
from pathlib import Path
from types import ModuleType
from typing import Any, Dict, List

import mmengine.config.utils
import numpy as np
import pytest
import torch
from mmengine.config import Config, DictAction
from mmengine.registry import PARAM_SCHEDULERS
from mmseg.models.segmentors import BaseSegmentor
from mmseg.registry import DATASETS, MODELS, TRANSFORMS

from mmseg_keyprotect.datasets import make_synthetic_voc
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import ChannelPermutation
from mmseg_keyprotect.transforms import BlockCipher, BlockNegPos

REPO = Path(__file__).resolve().parents[3]
CONFIGS = REPO / 'configs'
SPLITS = CONFIGS / '_base_' / 'splits'
# Model configs; attack configs (configs/attacks/) are tested in test_attack_configs.py.
ALL_CONFIGS = sorted(p.relative_to(CONFIGS).as_posix() for p in CONFIGS.rglob('*.py')
                     if not {'_base_', 'attacks'} & set(p.relative_to(CONFIGS).parts))
BASELINE = 'baseline/fcn_r50-d8_100e_voc12-256x256.py'
BLOCK_CONFIGS = [n for n in ALL_CONFIGS if n.startswith('block_encryption/')]
PERM_CONFIGS = [f'feature_permutation/fcn_r50-d8_perm-m{m}_100e_voc12-256x256.py'
                for m in range(1, 7)]
PROTOCOL_CONFIGS = [BASELINE, *BLOCK_CONFIGS, *PERM_CONFIGS]
# The CPU-scale comparison on real photographs (tests/unit/configs/test_stanford_configs.py).
STANFORD_CONFIGS = [n for n in ALL_CONFIGS if n.startswith('stanford_background/')]
CIPHER_TYPES = {'shf': 'BlockShuffle', 'np': 'BlockNegPos', 'ffx': 'BlockFFX'}
TRAIN_INDEX, TEST_INDEX = 5, 3  # documented in configs/block_encryption/_base_/
NUM_GPUS = 8


def _tool(name: str) -> ModuleType:
    """Import ``tools/dev/{name}.py`` as a module."""
    spec = importlib.util.spec_from_file_location(name, REPO / 'tools' / 'dev' / f'{name}.py')
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_configs = _tool('make_configs')
make_voc_splits = _tool('make_voc_splits')


@pytest.fixture(scope='module', autouse=True)
def cached_mmseg_metafiles():
    """Parse each of mmseg's metafiles once.

    mmengine parses all ~200 of them for every ``mmseg::`` reference; they do
    not change while the tests run.
    """
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(mmengine.config.utils, 'load',
                   functools.lru_cache(maxsize=None)(mmengine.config.utils.load))
        yield


@functools.lru_cache(maxsize=None)
def load(name: str) -> Config:
    """The config ``configs/{name}``, loaded once; deep-copy it before changing it."""
    return Config.fromfile(str(CONFIGS / name))


@pytest.fixture(scope='module')
def model_key() -> SecretKey:
    """The key every model and transform of this module is built with."""
    return SecretKey.generate()


def on_cpu(cfg: Any, key: SecretKey) -> Any:
    """A model or transform config buildable here: BN, no pretrained weights, ``key`` itself."""
    if isinstance(cfg, list):
        return [on_cpu(v, key) for v in cfg]
    if not isinstance(cfg, dict):
        return cfg
    out = {k: on_cpu(v, key) for k, v in cfg.items()}
    if out.get('type') == 'SyncBN':
        out['type'] = 'BN'
    for field in ('pretrained', 'init_cfg'):
        if field in out:
            out[field] = None
    if isinstance(out.get('key'), dict):
        out['key'] = key
    return out


@pytest.fixture(scope='module')
def build_model(model_key):
    """Build a config's model on the CPU; configs with the same model share one build."""
    built: Dict[str, torch.nn.Module] = {}

    def build(name: str) -> torch.nn.Module:
        model_cfg = on_cpu(load(name).model.to_dict(), model_key)
        text = repr(model_cfg)
        if text not in built:
            built[text] = MODELS.build(model_cfg).eval()
        return built[text]

    return build


def read_list(path: Path) -> List[str]:
    """The names of a split list."""
    return path.read_text().splitlines()


# ----------------------------------------------------------- every config
def test_configs_are_found():
    assert {BASELINE, *PERM_CONFIGS} <= set(ALL_CONFIGS)
    assert len(BLOCK_CONFIGS) == 3 * 8


@pytest.mark.parametrize('name', ALL_CONFIGS)
def test_every_config_loads_and_builds(name, build_model):
    cfg = load(name)
    assert cfg.default_scope == 'mmseg'
    assert cfg.custom_imports == dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                                      allow_failed_imports=False)
    assert isinstance(build_model(name), BaseSegmentor)


@pytest.mark.parametrize('name', [BASELINE, PERM_CONFIGS[-1]])
def test_forward_at_64x64(name, build_model):
    with torch.no_grad():
        logits = build_model(name)(torch.randn(1, 3, 64, 64), mode='tensor')
    assert logits.shape == (1, 21, 8, 8)  # 21 VOC classes at output stride 8
    assert torch.isfinite(logits).all()


def test_generated_configs_are_in_sync():
    expected = make_configs.generate()
    assert {p.relative_to(CONFIGS).as_posix() for p in expected} == \
        set(BLOCK_CONFIGS) | set(PERM_CONFIGS) | set(STANFORD_CONFIGS)
    assert make_configs.stale_files(expected) == []


# ------------------------------------------------------------ the protocol
@pytest.mark.parametrize('name', PROTOCOL_CONFIGS)
def test_protocol_is_the_papers(name):
    cfg = load(name)
    optimizer = cfg.optim_wrapper.optimizer
    assert (optimizer.type, optimizer.lr, optimizer.momentum, optimizer.weight_decay) == \
        ('SGD', 0.1, 0.9, 0.005)
    assert cfg.train_cfg == dict(type='EpochBasedTrainLoop', max_epochs=100, val_interval=1)
    [sgdr] = cfg.param_scheduler
    assert sgdr.type == 'CosineRestartLR' and sgdr.eta_min == 1e-4
    assert sgdr.periods == [10] * 10 and sgdr.restart_weights == [1] * 10
    assert (sgdr.begin, sgdr.end, sgdr.by_epoch) == (0, 100, True) and sgdr.convert_to_iter_based
    # batch 256 = 8 GPUs x 32; lr scaling is relative to 256
    assert cfg.train_dataloader.batch_size * NUM_GPUS == 256
    assert cfg.auto_scale_lr == dict(enable=False, base_batch_size=256)
    sampler = cfg.train_dataloader.sampler
    assert (sampler.type, sampler.shuffle) == ('DefaultSampler', True)
    # model: FCN-R50-D8, 21 classes, cross-entropy, 256x256 batches
    model = cfg.model
    assert model.backbone.type == 'ResNetV1c' and model.backbone.depth == 50
    for head in (model.decode_head, model.auxiliary_head):
        assert head.type == 'FCNHead' and head.num_classes == 21
        assert head.loss_decode.type == 'CrossEntropyLoss' and not head.loss_decode.use_sigmoid
    assert tuple(model.data_preprocessor.size) == (256, 256)
    # data: VOC 2012, 1318 train / 146 development from the shipped lists, VOC val for test
    datasets = {split: cfg[f'{split}_dataloader'].dataset for split in ('train', 'val', 'test')}
    for dataset in datasets.values():
        assert (dataset.type, dataset.data_root) == ('PascalVOCDataset', 'data/VOCdevkit/VOC2012')
    assert Path(datasets['train'].ann_file).resolve() == SPLITS / 'voc12_train1318.txt'
    assert Path(datasets['val'].ann_file).resolve() == SPLITS / 'voc12_dev146.txt'
    assert datasets['test'].ann_file == 'ImageSets/Segmentation/val.txt'
    # 256x256: resize for testing, random resized crop + flip for training
    train = {step.type: step for step in datasets['train'].pipeline}
    assert train['RandomResize'].scale == [(256, 256), (512, 512)]
    assert not train['RandomResize'].keep_ratio
    assert tuple(train['RandomCrop'].crop_size) == (256, 256)
    assert train['RandomFlip'].prob == 0.5
    for split in ('val', 'test'):
        resize = next(s for s in datasets[split].pipeline if s.type == 'Resize')
        assert tuple(resize.scale) == (256, 256) and not resize.keep_ratio
    # both mean IoUs: mmseg's pooled one and paper 2's per image (the papers' number)
    for evaluator in (cfg.val_evaluator, cfg.test_evaluator):
        assert [m.type for m in evaluator] == ['IoUMetric', 'PerImageIoUMetric']
    # best checkpoint by (correct-key) development mIoU
    checkpoint = cfg.default_hooks.checkpoint
    assert (checkpoint.save_best, checkpoint.rule) == ('mIoU', 'greater') and checkpoint.by_epoch
    if name == BASELINE:
        assert (cfg.val_cfg.type, cfg.test_cfg.type) == ('ValLoop', 'TestLoop')
    else:
        assert cfg.val_cfg.type == 'KeyConditionValLoop'
        assert (cfg.test_cfg.type, cfg.test_cfg.incorrect, cfg.test_cfg.seed) == \
            ('KeyConditionTestLoop', 100, 0)
        assert "env='KP_KEY'" in cfg.pretty_text


def test_lr_restarts_every_10_epochs_down_to_1e_4():
    cfg = load(BASELINE)
    param = torch.nn.Parameter(torch.zeros(1))
    optimizer = torch.optim.SGD([param], lr=cfg.optim_wrapper.optimizer.lr, momentum=0.9)
    epoch = math.ceil(1318 / 256)
    scheduler = PARAM_SCHEDULERS.build(dict(cfg.param_scheduler[0]),
                                       default_args=dict(optimizer=optimizer, epoch_length=epoch))
    lrs = []
    for _ in range(100 * epoch):
        lrs.append(optimizer.param_groups[0]['lr'])
        optimizer.step()
        scheduler.step()
    cycles = [lrs[start:start + 10 * epoch] for start in range(0, 100 * epoch, 10 * epoch)]
    assert len(cycles) == 10
    for cycle in cycles:
        assert cycle[0] == pytest.approx(0.1)
        assert all(a > b for a, b in zip(cycle, cycle[1:]))
        assert 1e-4 <= cycle[-1] < 2e-4


@pytest.mark.parametrize('name', BLOCK_CONFIGS)
def test_cipher_sits_at_the_documented_indices(name):
    cipher, size = re.search(r'_(shf|np|ffx)-b(\d+)_', name).groups()
    cfg, baseline = load(name), load(BASELINE)
    pipelines = {split: cfg[f'{split}_dataloader'].dataset.pipeline
                 for split in ('train', 'val', 'test')}
    step = pipelines['train'][TRAIN_INDEX]
    expected = dict(type=CIPHER_TYPES[cipher], block_size=int(size), key=dict(env='KP_KEY'),
                    num_channels=3)
    if cipher == 'ffx':  # paper 1's FFX: fixed password, the key chooses the positions
        expected['mode'] = 'paper'
    assert step == expected
    assert 256 % step.block_size == 0
    for split, index in (('train', TRAIN_INDEX), ('val', TEST_INDEX), ('test', TEST_INDEX)):
        pipeline = pipelines[split]
        assert pipeline[index] == step and pipeline[index + 1].type == 'PackSegInputs'
        # otherwise the baseline's pipeline
        assert pipeline[:index] + pipeline[index + 1:] == \
            baseline[f'{split}_dataloader'].dataset.pipeline
    assert cfg.model == baseline.model


def cfg_options(*items: str) -> Dict[str, Any]:
    """``--cfg-options ITEM...`` parsed as mmseg's tools parse it."""
    parser = argparse.ArgumentParser()
    parser.add_argument('--cfg-options', nargs='+', action=DictAction)
    return parser.parse_args(['--cfg-options', *items]).cfg_options


def test_cfg_options_change_block_size_and_cipher(model_key):
    cfg = copy.deepcopy(load('block_encryption/fcn_r50-d8_shf-b4_100e_voc12-256x256.py'))
    places = (('train_dataloader', TRAIN_INDEX), ('val_dataloader', TEST_INDEX),
              ('test_dataloader', TEST_INDEX))
    cfg.merge_from_dict(cfg_options(*(f'{loader}.dataset.pipeline.{index}.{field}'
                                      for loader, index in places
                                      for field in ('type=BlockNegPos', 'block_size=8'))))
    for loader, index in places:
        cipher = TRANSFORMS.build(on_cpu(cfg[loader].dataset.pipeline[index].to_dict(), model_key))
        assert isinstance(cipher, BlockNegPos) and cipher.block_size == 8


def test_cfg_options_change_the_point(model_key):
    cfg = copy.deepcopy(load(PERM_CONFIGS[-1]))
    cfg.merge_from_dict(cfg_options("model.protection.points=['backbone.layer2']"))
    model = MODELS.build(on_cpu(cfg.model.to_dict(), model_key))
    purposes = [m.purpose for m in model.modules() if isinstance(m, ChannelPermutation)]
    assert purposes == ['backbone.layer2:output']


# ------------------------------------------------------------------ splits
def test_split_lists_are_voc2012_train():
    train, dev = read_list(SPLITS / 'voc12_train1318.txt'), read_list(SPLITS / 'voc12_dev146.txt')
    assert (len(train), len(dev)) == (1318, 146)
    assert train == sorted(set(train)) and dev == sorted(set(dev))
    assert not set(train) & set(dev)
    names = sorted(train + dev)
    assert len(names) == 1464 and (names[0], names[-1]) == ('2007_000032', '2011_003255')
    assert all(re.fullmatch(r'20(07|08|09|10|11)_\d{6}', n) for n in names)


def test_make_voc_splits_reproduces_the_shipped_lists(tmp_path):
    names = read_list(SPLITS / 'voc12_train1318.txt') + read_list(SPLITS / 'voc12_dev146.txt')
    random.Random(0).shuffle(names)  # the split does not depend on the input order
    voc_list = tmp_path / 'train.txt'
    voc_list.write_text('\n'.join(names) + '\n')
    make_voc_splits.main(['--train-list', str(voc_list), '--check'])
    make_voc_splits.main(['--train-list', str(voc_list), '--out-dir', str(tmp_path / 'out')])
    for name in ('voc12_train1318.txt', 'voc12_dev146.txt'):
        assert (tmp_path / 'out' / name).read_bytes() == (SPLITS / name).read_bytes()
    voc_list.write_text('\n'.join(names[:-1]) + '\n')
    with pytest.raises(SystemExit, match='1463'):
        make_voc_splits.main(['--train-list', str(voc_list), '--check'])


def test_split_paths_work_from_any_working_directory(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    cfg = Config.fromfile(os.path.relpath(CONFIGS / BASELINE, tmp_path))
    dumped = tmp_path / 'dumped.py'
    cfg.dump(str(dumped))
    for loaded in (cfg, Config.fromfile(str(dumped))):
        for loader in ('train_dataloader', 'val_dataloader'):
            ann_file = Path(loaded[loader].dataset.ann_file)
            assert ann_file.is_absolute() and ann_file.is_file()


# ---------------------------------------------- real pipelines, end to end
@pytest.fixture(scope='module')
def voc_300x200(tmp_path_factory) -> Path:
    """A VOC-layout dataset of one train and one val image, 300 wide and 200 high."""
    return make_synthetic_voc(tmp_path_factory.mktemp('voc'), num_train=1, num_val=1,
                              image_size=(200, 300), seed=0)


@pytest.mark.parametrize('name', ['block_encryption/fcn_r50-d8_shf-b4_100e_voc12-256x256.py',
                                  'block_encryption/fcn_r50-d8_ffx-b256_100e_voc12-256x256.py'])
def test_real_pipelines_encrypt_256x256_inputs(name, voc_300x200, model_key, monkeypatch):
    monkeypatch.setenv('KP_KEY', model_key.export_hex())
    cfg = load(name)
    for loader, index, split in (('train_dataloader', TRAIN_INDEX, 'train'),
                                 ('test_dataloader', TEST_INDEX, 'val')):
        dataset = DATASETS.build({**cfg[loader].dataset.to_dict(), 'data_root': str(voc_300x200),
                                  'ann_file': f'ImageSets/Segmentation/{split}.txt'})
        cipher = dataset.pipeline.transforms[index]
        assert isinstance(cipher, BlockCipher)
        outputs = {}
        for condition, key in (('encrypted', model_key), ('plain', None)):
            cipher.use_key(key)
            np.random.seed(0)  # the same random resized crop and flip for both
            outputs[condition] = dataset[0]
        encrypted, plain = (outputs[c]['inputs'] for c in ('encrypted', 'plain'))
        assert encrypted.shape == plain.shape == (3, 256, 256)
        assert not torch.equal(encrypted, plain)
        expected = cipher.encrypt(plain.numpy().transpose(1, 2, 0), model_key)
        np.testing.assert_array_equal(encrypted.numpy().transpose(1, 2, 0), expected)
        sample = outputs['encrypted']['data_samples']
        assert sample.img_shape == (256, 256) and sample.ori_shape == (200, 300)
        # training masks follow the crop; test masks stay at the image's own size
        gt_shape = (256, 256) if split == 'train' else (200, 300)
        assert tuple(sample.gt_sem_seg.data.shape) == (1, *gt_shape)
        plain_gt = outputs['plain']['data_samples'].gt_sem_seg.data
        assert torch.equal(sample.gt_sem_seg.data, plain_gt)
