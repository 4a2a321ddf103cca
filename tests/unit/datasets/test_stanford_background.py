"""The Stanford Background preparation: layout, 15 -> 255, split lists, refusals, dataset class.

A few images and labels in the raw layout are made in the test (tests/stanford_fixture.py);
no real data is read. The git-directory source is tested in tests/e2e/tools/.
"""
from __future__ import annotations

import tarfile
from pathlib import Path

import numpy as np
import pytest
from mmseg.registry import DATASETS
from PIL import Image

from mmseg_keyprotect.datasets.stanford_background import (CLASSES, IGNORE_INDEX, PALETTE,
                                                            SourceError, carve_selection,
                                                            prepare_stanford_background,
                                                            read_label, read_split_lists,
                                                            source_folder)
from tests.stanford_fixture import LISTS, SIZE, make_raw_copy, raw_label, write_lists

REPO = Path(__file__).resolve().parents[3]
SHIPPED = REPO / 'configs' / '_base_' / 'splits'


@pytest.fixture
def raw(tmp_path: Path) -> Path:
    return make_raw_copy(tmp_path / 'iccv09Data')


@pytest.fixture
def lists(tmp_path: Path):
    return read_split_lists(write_lists(tmp_path / 'lists'))


def _read_png(path: Path) -> np.ndarray:
    with Image.open(path) as png:
        return np.asarray(png)


# ----------------------------------------------------------------------- the shipped lists
def test_shipped_lists_are_disjoint_and_sized():
    lists = read_split_lists(SHIPPED)
    assert {s: len(v) for s, v in lists.items()} == {'train': 500, 'val': 72, 'test': 143}
    assert len(set().union(*lists.values())) == 715


def test_shipped_val_is_carved_from_the_official_training_list():
    lists = read_split_lists(SHIPPED)
    train, val = carve_selection(lists['train'] + lists['val'])
    assert (train, val) == (sorted(lists['train']), sorted(lists['val']))


def test_carve_selection_ignores_order():
    ids = [f'{i:07d}' for i in range(20)]
    assert carve_selection(ids[::-1], every=4) == carve_selection(ids, every=4)
    train, val = carve_selection(ids, every=4)
    assert val == ids[::4] and not set(train) & set(val) and len(train) + len(val) == 20


def test_overlapping_lists_are_refused(tmp_path):
    folder = write_lists(tmp_path / 'lists')
    (folder / 'stanford_background_test.txt').write_text(LISTS['train'][0] + '\n')
    with pytest.raises(SourceError, match=f"id {LISTS['train'][0]} is in both"):
        read_split_lists(folder)


# ----------------------------------------------------------------------- preparation
def test_layout_counts_and_remap(raw, lists, tmp_path):
    out = tmp_path / 'out'
    prepared = prepare_stanford_background(raw, out, lists)
    assert prepared.counts == {'train': 3, 'val': 1, 'test': 2}
    ids = [i for split in ('train', 'val', 'test') for i in LISTS[split]]
    for split, split_ids in LISTS.items():
        assert sorted(p.stem for p in (out / 'img_dir' / split).iterdir()) == sorted(split_ids)
        assert sorted(p.stem for p in (out / 'ann_dir' / split).iterdir()) == sorted(split_ids)
        for image_id in split_ids:
            # images are copied unchanged; labels hold class indices, unknown (15) -> 255
            assert (out / 'img_dir' / split / f'{image_id}.jpg').read_bytes() == \
                (raw / 'images' / f'{image_id}.jpg').read_bytes()
            expected = raw_label(ids.index(image_id))
            label = _read_png(out / 'ann_dir' / split / f'{image_id}.png')
            np.testing.assert_array_equal(label, np.where(expected < 0, IGNORE_INDEX, expected))
    assert prepared.class_pixels['train']['unknown'] == 3 * 4
    assert sum(prepared.class_pixels['test'].values()) == 2 * SIZE[0] * SIZE[1]
    assert (out / 'prepared.json').is_file()


def test_fingerprint_is_the_same_from_png_regions_txt_and_a_tarball(raw, lists, tmp_path):
    from_png = prepare_stanford_background(raw, tmp_path / 'a', lists).label_fingerprint
    official = make_raw_copy(tmp_path / 'official' / 'iccv09Data', regions=True, splits=False)
    tarball = tmp_path / 'iccv09Data.tar.gz'
    with tarfile.open(tarball, 'w:gz') as tar:
        tar.add(official, arcname='iccv09Data')
    from_tar = prepare_stanford_background(tarball, tmp_path / 'b', lists).label_fingerprint
    from_folder = prepare_stanford_background(official.parent, tmp_path / 'c',
                                              lists).label_fingerprint
    assert from_png == from_tar == from_folder
    assert len(from_png) == 64


def test_fingerprint_changes_with_one_label_pixel(raw, lists, tmp_path):
    before = prepare_stanford_background(raw, tmp_path / 'a', lists).label_fingerprint
    path = raw / 'labels' / f"{LISTS['test'][0]}.png"
    values = _read_png(path).copy()
    values[5, 5] = (values[5, 5] + 1) % 8
    png = Image.fromarray(values, mode='P')
    png.putpalette(list(range(48)))
    png.save(path, bits=4)
    assert prepare_stanford_background(raw, tmp_path / 'b', lists).label_fingerprint != before


@pytest.mark.parametrize('damage, message', [
    (lambda raw: (raw / 'images' / f"{LISTS['val'][0]}.jpg").unlink(),
     f"missing file in the source: images/{LISTS['val'][0]}.jpg"),
    (lambda raw: (raw / 'labels' / f"{LISTS['test'][1]}.png").unlink(),
     f"missing file in the source: labels/{LISTS['test'][1]}.png"),
    (lambda raw: (raw / 'images' / '0999999.jpg').write_bytes(b'x'),
     'unexpected file in the source: .*0999999.jpg'),
    (lambda raw: (raw / 'labels' / 'notes.txt').write_text('x'),
     'unexpected file in the source: .*notes.txt'),
    (lambda raw: (raw / 'extra.zip').write_text('x'), 'unexpected file in the source: .*extra.zip'),
    (lambda raw: (raw / 'splits' / 'val.txt').write_text('6000005\n'),
     'val.txt differs from the fixed split lists'),
])
def test_missing_or_unexpected_files_are_refused_in_one_line(raw, lists, tmp_path, damage,
                                                              message):
    damage(raw)
    with pytest.raises(SourceError, match=message) as info:
        prepare_stanford_background(raw, tmp_path / 'out', lists)
    assert '\n' not in str(info.value)
    assert not (tmp_path / 'out').exists()  # checked before anything is written


def test_invalid_label_values_and_sizes_are_refused(raw, lists, tmp_path):
    image_id = LISTS['train'][0]
    path = raw / 'labels' / f'{image_id}.png'
    values = np.zeros(SIZE, np.uint8)
    values[3, 3] = 9
    png = Image.fromarray(values, mode='P')
    png.putpalette(list(range(48)))
    png.save(path)
    with pytest.raises(SourceError, match=r'value\(s\) \[9\] are not class indices 0..7'):
        read_label(path)
    values[3, 3] = 7
    png = Image.fromarray(np.tile(values, (1, 2)), mode='P')
    png.putpalette(list(range(48)))
    png.save(path)
    with pytest.raises(SourceError, match=f'label of {SIZE[0]}x{SIZE[1] * 2} for an image of '
                       f'{SIZE[0]}x{SIZE[1]}'):
        prepare_stanford_background(raw, tmp_path / 'out', lists)


def test_rgb_label_png_is_refused(tmp_path):
    path = tmp_path / 'label.png'
    Image.new('RGB', (4, 4)).save(path)
    with pytest.raises(SourceError, match='a RGB PNG, expected a palette'):
        read_label(path)


def test_existing_output_needs_overwrite(raw, lists, tmp_path):
    out = tmp_path / 'out'
    prepare_stanford_background(raw, out, lists)
    (out / 'img_dir' / 'train' / 'stale.jpg').write_bytes(b'x')
    with pytest.raises(SourceError, match='exists; pass overwrite=True'):
        prepare_stanford_background(raw, out, lists)
    prepare_stanford_background(raw, out, lists, overwrite=True)
    assert not (out / 'img_dir' / 'train' / 'stale.jpg').exists()


def test_sources_that_are_not_a_dataset_are_refused(tmp_path):
    with pytest.raises(SourceError, match='is not a folder, a tarball or GIT_DIR@COMMIT'):
        with source_folder(tmp_path / 'nothing'):
            pass
    with pytest.raises(SourceError, match='has no images/ folder'):
        with source_folder(tmp_path):
            pass
    (tmp_path / 'broken.tar.gz').write_bytes(b'not a tarball')
    with pytest.raises(SourceError, match='cannot extract'):
        with source_folder(tmp_path / 'broken.tar.gz'):
            pass


# ----------------------------------------------------------------------- the dataset class
def test_registered_dataset_reads_the_prepared_layout(raw, lists, tmp_path):
    out = tmp_path / 'out'
    prepare_stanford_background(raw, out, lists)
    dataset = DATASETS.build(dict(
        type='StanfordBackgroundDataset', data_root=str(out),
        data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'),
        pipeline=[dict(type='LoadImageFromFile'), dict(type='LoadAnnotations')]))
    assert dataset.metainfo['classes'] == CLASSES and len(dataset.metainfo['palette']) == 8
    assert [tuple(c) for c in dataset.metainfo['palette']] == list(PALETTE)
    assert len(dataset) == 2
    sample = dataset[0]
    assert sample['gt_seg_map'].shape == SIZE
    assert set(np.unique(sample['gt_seg_map'])) <= set(range(8)) | {IGNORE_INDEX}
    assert IGNORE_INDEX in sample['gt_seg_map']


def test_dataset_names_the_preparation_command_when_missing(tmp_path):
    with pytest.raises(FileNotFoundError, match='prepare_stanford_background.py SOURCE'):
        DATASETS.build(dict(type='StanfordBackgroundDataset', data_root=str(tmp_path),
                            data_prefix=dict(img_path='img_dir/test',
                                             seg_map_path='ann_dir/test')))
