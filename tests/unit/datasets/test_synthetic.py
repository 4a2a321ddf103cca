"""The synthetic VOC-layout dataset: layout, determinism, loading through mmseg."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from mmengine.config import Config
from mmseg.registry import DATASETS
from PIL import Image

from mmseg_keyprotect.datasets import CLASSES, PALETTE, SyntheticVOCDataset, make_synthetic_voc
from mmseg_keyprotect.datasets.synthetic import render_sample

DEMO_DATASET = Path(__file__).parents[3] / 'configs/demo/_base_/datasets/synthetic_voc.py'


def _files(root: Path) -> dict:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in root.rglob('*') if p.is_file()}


def test_layout(synthetic_voc: Path):
    split_dir = synthetic_voc / 'ImageSets' / 'Segmentation'
    train = split_dir.joinpath('train.txt').read_text().split()
    val = split_dir.joinpath('val.txt').read_text().split()
    test = split_dir.joinpath('test.txt').read_text().split()
    assert (len(train), len(val), len(test)) == (8, 4, 4)
    assert not set(train) & set(val) and not set(val) & set(test) and not set(train) & set(test)
    for name in train + val + test:
        image = Image.open(synthetic_voc / 'JPEGImages' / f'{name}.jpg')
        label = Image.open(synthetic_voc / 'SegmentationClass' / f'{name}.png')
        assert (image.format, image.mode, image.size) == ('JPEG', 'RGB', (64, 64))
        assert (label.format, label.mode, label.size) == ('PNG', 'P', (64, 64))
        assert np.array(label).max() < len(CLASSES)
        assert label.getpalette()[:3 * len(PALETTE)] == [v for c in PALETTE for v in c]
    assert len(list((synthetic_voc / 'JPEGImages').iterdir())) == 16


def test_same_seed_gives_identical_files(tmp_path: Path):
    first = _files(make_synthetic_voc(tmp_path / 'a', num_train=3, num_val=2, image_size=(32, 48)))
    second = _files(make_synthetic_voc(tmp_path / 'b', num_train=3, num_val=2,
                                       image_size=(32, 48)))
    assert first == second


def test_other_seed_gives_other_images_and_val_count_leaves_train_alone(tmp_path: Path):
    base = _files(make_synthetic_voc(tmp_path / 'a', num_train=2, num_val=1, seed=0))
    reseeded = _files(make_synthetic_voc(tmp_path / 'b', num_train=2, num_val=1, seed=1))
    more_val = _files(make_synthetic_voc(tmp_path / 'c', num_train=2, num_val=3, seed=0))
    assert base['JPEGImages/train_00000.jpg'] != reseeded['JPEGImages/train_00000.jpg']
    assert all(more_val[name] == data for name, data in base.items() if 'train' in name)


def test_test_split_is_disjoint_from_val_and_leaves_it_alone(tmp_path: Path):
    without = _files(make_synthetic_voc(tmp_path / 'a', num_train=2, num_val=3))
    root = make_synthetic_voc(tmp_path / 'b', num_train=2, num_val=3, num_test=3)
    with_test = _files(root)
    assert 'ImageSets/Segmentation/test.txt' not in without
    assert all(with_test[name] == data for name, data in without.items())
    split_dir = root / 'ImageSets' / 'Segmentation'
    val = split_dir.joinpath('val.txt').read_text().split()
    test = split_dir.joinpath('test.txt').read_text().split()
    assert len(test) == 3 and not set(val) & set(test)
    # different pictures, not only different names
    assert not ({with_test[f'JPEGImages/{n}.jpg'] for n in val}
                & {with_test[f'JPEGImages/{n}.jpg'] for n in test})
    with pytest.raises(ValueError, match='num_test'):
        make_synthetic_voc(tmp_path / 'c', num_train=1, num_val=1, num_test=-1)


def test_every_class_appears_with_its_colour():
    rng = np.random.default_rng(0)
    samples = [render_sample(rng, (48, 48)) for _ in range(40)]
    images = np.stack([s[0] for s in samples]).reshape(-1, 3).astype(float)
    labels = np.stack([s[1] for s in samples]).reshape(-1)
    assert set(np.unique(labels)) == set(range(len(CLASSES)))
    for index, name in enumerate(CLASSES[1:], start=1):
        dominant = {'red': 0, 'green': 1, 'blue': 2}[name.split('_')[0]]
        assert images[labels == index].mean(axis=0).argmax() == dominant, name


@pytest.mark.parametrize('kwargs, message', [
    (dict(num_train=0), 'num_train'),
    (dict(num_val=1.5), 'num_val'),
    (dict(image_size=(8, 64)), 'image_size'),
    (dict(image_size=(64, )), 'image_size'),
])
def test_bad_arguments_are_named(tmp_path: Path, kwargs: dict, message: str):
    with pytest.raises(ValueError, match=message):
        make_synthetic_voc(tmp_path, **kwargs)
    assert not (tmp_path / 'JPEGImages').exists()


@pytest.mark.parametrize('split, pipeline', [('train', 'train_pipeline'),
                                             ('val', 'test_pipeline')])
def test_builds_with_the_demo_pipelines(synthetic_voc: Path, split: str, pipeline: str):
    cfg = Config.fromfile(DEMO_DATASET)
    dataset = DATASETS.build(
        dict(type='SyntheticVOCDataset', data_root=str(synthetic_voc),
             ann_file=f'ImageSets/Segmentation/{split}.txt', pipeline=cfg[pipeline]))
    assert isinstance(dataset, SyntheticVOCDataset)
    assert len(dataset) == {'train': 8, 'val': 4}[split]
    assert dataset.metainfo['classes'] == CLASSES
    assert not dataset.reduce_zero_label
    sample = dataset[0]
    assert tuple(sample['inputs'].shape) == (3, 64, 64)
    seg = sample['data_samples'].gt_sem_seg.data.numpy()
    assert seg.shape == (1, 64, 64)
    assert set(np.unique(seg)) <= set(range(len(CLASSES))) | {255}


def test_layout_is_the_one_of_mmseg_pascal_voc_dataset(synthetic_voc: Path):
    dataset = DATASETS.build(
        dict(type='PascalVOCDataset', data_root=str(synthetic_voc),
             data_prefix=dict(img_path='JPEGImages', seg_map_path='SegmentationClass'),
             ann_file='ImageSets/Segmentation/val.txt',
             pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]))
    assert len(dataset) == 4
    sample = dataset[0]
    assert sample['img'].shape == (64, 64, 3)
    expected = np.array(Image.open(synthetic_voc / 'SegmentationClass' / 'val_00000.png'))
    np.testing.assert_array_equal(sample['gt_seg_map'], expected)


def test_missing_dataset_says_how_to_make_it(tmp_path: Path):
    with pytest.raises(FileNotFoundError, match='tools/make_dataset.py'):
        DATASETS.build(dict(type='SyntheticVOCDataset', data_root=str(tmp_path / 'none'),
                            ann_file='ImageSets/Segmentation/train.txt'))
