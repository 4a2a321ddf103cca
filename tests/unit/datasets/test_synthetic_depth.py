"""The synthetic depth set loads with mmseg's own NYUDataset and LoadDepthAnnotation."""
from __future__ import annotations

import numpy as np
import pytest
from mmseg.registry import DATASETS

from mmseg_keyprotect.datasets import make_synthetic_nyu


def test_nyu_dataset_reads_depth_in_metres_and_the_scene_class(tmp_path):
    root = make_synthetic_nyu(tmp_path / 'nyu', num_images=2, image_size=(32, 48), seed=3)
    dataset = DATASETS.build(dict(
        type='NYUDataset', data_root=str(root), test_mode=True,
        data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
        pipeline=[dict(type='LoadImageFromFile'),
                  dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3)]))
    assert len(dataset) == 2
    sample = dataset[0]
    depth = sample['gt_depth_map']
    assert sample['img'].shape == (32, 48, 3) and depth.shape == (32, 48)
    assert sample['category_id'] == dataset.metainfo['classes'].index('bedroom')
    assert depth.min() == pytest.approx(1.0) and depth.max() == pytest.approx(6.0)
    # the floor recedes upwards: the top row is farther than the bottom row where no shape is
    floor = depth[0] > depth[-1]
    assert floor.any()
    assert len(np.unique(depth)) > 8


def test_same_seed_same_bytes_and_bad_count(tmp_path):
    first = make_synthetic_nyu(tmp_path / 'a', num_images=1, seed=1)
    second = make_synthetic_nyu(tmp_path / 'b', num_images=1, seed=1)
    for rel in ('images/test/bedroom_00000.jpg', 'annotations/test/bedroom_00000.png'):
        assert (first / rel).read_bytes() == (second / rel).read_bytes()
    with pytest.raises(ValueError, match='num_images must be an integer >= 1, got 0'):
        make_synthetic_nyu(tmp_path / 'c', num_images=0)
