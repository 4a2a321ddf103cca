"""The sweep over mmseg's model families and the table it generates (docs/architectures.md).

The sweep itself (it runs the key-condition test loop through mmengine's Runner and
reloads checkpoints in a fresh process): ``tests/e2e/test_sweep.py``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch
from mmengine.config import Config

from mmseg_keyprotect.testing.sweep import (FAMILIES, NEEDS_EXTRA, TABLE_COLUMNS, FamilyResult,
                                            changed_pixels, check_family, list_families,
                                            markdown_table, missing_extra,
                                            protected_child_config, shrink_config)

DOC = Path(__file__).resolve().parents[3] / 'docs' / 'architectures.md'
README = Path(__file__).resolve().parents[3] / 'README.md'

def _doc_cells() -> List[List[str]]:
    cells = [[c.strip() for c in re.split(r'(?<!\\)\|', line.strip().strip('|'))]
             for line in DOC.read_text().splitlines() if line.startswith('| ')]
    return [row for row in cells if len(row) == len(TABLE_COLUMNS) and row[0] != 'family']


def doc_rows() -> Dict[str, Tuple[str, List[str]]]:
    """family -> (status, points) from docs/architectures.md."""
    return {row[0]: (row[5], re.findall(r'`([^`]+)`', row[2])) for row in _doc_cells()}


def _fraction(cell: str) -> Optional[float]:
    return None if cell == '-' else float(cell.rstrip(' %')) / 100


def doc_figures() -> Dict[str, Tuple[Optional[float], Optional[float]]]:
    """family -> (changed pixels plain, incorrect key) from docs/architectures.md."""
    return {row[0]: (_fraction(row[3]), _fraction(row[4])) for row in _doc_cells()}


def test_every_family_mmseg_ships_has_a_representative_config():
    assert list_families() == sorted(FAMILIES)
    assert len(FAMILIES) == 53


def test_doc_has_one_row_per_family_and_every_family_works():
    rows = doc_rows()
    assert sorted(rows) == list_families()
    failed = {family: status for family, (status, _) in rows.items() if status != 'ok'}
    # VPD is a depth estimator built on Stable Diffusion's `ldm` package (not on PyPI)
    assert set(failed) <= {'vpd'}, f'families that do not work: {failed}'
    figures = doc_figures()
    for family, (status, points) in rows.items():
        assert status in ('ok', 'failed', NEEDS_EXTRA)
        if status == 'ok':
            assert points, family
            assert all(f is not None and 0 <= f <= 1 for f in figures[family]), family


def test_doc_says_when_and_where_it_was_measured():
    head = DOC.read_text()[:600]
    assert re.search(r'on 20\d\d-\d\d-\d\d, \d+ s on \w+ CPU, \d+ cores', head), head
    assert 'mmdet 3.3.0, mmpretrain 1.2.0' in head


def test_mask_heads_get_points_past_the_backbone():
    rows = doc_rows()
    for family in ('mask2former', 'maskformer'):
        points = rows[family][1]
        assert any('pixel_decoder' in p for p in points), points
        assert any('mask_embed' in p for p in points), points
    assert any('kernel_update_head' in p and 'fc_mask' in p for p in rows['knet'][1])
    assert any(p.startswith('decode_head.') for p in rows['san'][1])


def test_readme_links_the_table():
    assert '(docs/architectures.md)' in README.read_text()


def test_protected_child_config_is_the_two_line_user_config(tmp_path):
    text = protected_child_config('ocrnet', 'ocrnet_hr18s_4xb4-80k_ade20k-512x512.py',
                                  'CascadeEncoderDecoder', '/keys/owner.key')
    assert text.splitlines() == [
        "_base_ = ['mmseg::ocrnet/ocrnet_hr18s_4xb4-80k_ade20k-512x512.py']",
        "model = dict(type='KeyProtectedCascadeEncoderDecoder', protection=dict("
        "key=dict(file='/keys/owner.key'), points='auto', encrypt_weights=True))"]
    with pytest.raises(ValueError, match="'DepthEstimator' has no protected variant"):
        protected_child_config('vpd', 'x.py', 'DepthEstimator', 'k')


def test_shrink_config_removes_downloads_and_syncbn():
    cfg = Config(dict(model=dict(
        type='EncoderDecoder', pretrained='open-mmlab://resnet50_v1c',
        data_preprocessor=dict(type='SegDataPreProcessor', size=(512, 1024)),
        backbone=dict(type='ResNetV1c', norm_cfg=dict(type='SyncBN', requires_grad=True),
                      init_cfg=dict(type='Pretrained', checkpoint='x.pth')),
        decode_head=dict(type='FCNHead', norm_cfg=dict(type='SyncBN')),
        test_cfg=dict(mode='slide', crop_size=(512, 512), stride=(341, 341)))))
    shrink_config(cfg, 32, {'model.backbone.depth': 18})
    model = cfg.model
    assert model.pretrained is None and model.backbone.init_cfg is None
    assert model.backbone.norm_cfg.type == 'BN' and model.decode_head.norm_cfg.type == 'BN'
    assert model.data_preprocessor.size == (32, 32)
    assert model.test_cfg == dict(mode='whole')
    assert model.backbone.depth == 18


def test_markdown_table_rows():
    table = markdown_table([
        FamilyResult('fcn', 'fcn.py', 'ok', ['backbone.layer4:output'], 0.25, 0.5),
        FamilyResult('vpd', 'vpd.py', 'failed', [], stage='config', reason='a | b'),
        FamilyResult('convnext', 'c.py', NEEDS_EXTRA, [], stage='config', reason='r')])
    assert '**1 of 3 families work.** 1 need the families extra' in table
    assert '| fcn | `fcn.py` | `backbone.layer4:output` | 25.0 % | 50.0 % | ok | - |' in table
    assert r'| vpd | `vpd.py` | - | - | - | failed | config: a \| b |' in table


def test_changed_pixels_is_the_fraction_of_argmax_changes():
    reference = torch.zeros(1, 3, 2, 2)
    reference[:, 0] = 1  # class 0 everywhere
    other = reference.clone()
    other[0, 2, 0, 0] = 5  # one pixel of four becomes class 2
    other[0, 1, 1, 1] = 0.5  # a smaller logit change that keeps class 0
    assert changed_pixels(reference, other) == 0.25
    assert changed_pixels(reference, reference) == 0.0


def test_a_family_without_its_extra_is_marked_not_built(monkeypatch, tmp_path):
    monkeypatch.setitem(FAMILIES, 'convnext',
                        dict(FAMILIES['convnext'], extra=('no_such_package_kp', 'torch')))
    assert missing_extra('convnext') == ['no_such_package_kp']
    result = check_family('convnext', tmp_path, tmp_path / 'owner.key', tmp_path / 'data')
    assert (result.status, result.stage) == (NEEDS_EXTRA, 'config')
    assert 'no_such_package_kp not installed' in result.reason and 'torch' not in result.reason
    assert not (tmp_path / 'convnext').exists()


def test_families_extra_lists_the_packages_the_sweep_checks():
    setup = (Path(__file__).resolve().parents[3] / 'setup.py').read_text()
    extra = re.search(r"'families': \[([^\]]*)\]", setup).group(1)
    pinned = set(re.findall(r"'(\w+)==", extra))
    needed = {name for entry in FAMILIES.values() for name in entry.get('extra', ())}
    assert pinned == needed == {'mmdet', 'mmpretrain'}
