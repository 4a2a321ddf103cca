"""The sweep over mmseg's model families and the table it generates (docs/architectures.md).

The sweep itself (it runs the key-condition test loop through mmengine's Runner and
reloads checkpoints in a fresh process): ``tests/e2e/test_sweep.py``.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, List, Tuple

import pytest
from mmengine.config import Config

from mmseg_keyprotect.sweep import (FAMILIES, FamilyResult, list_families, markdown_table,
                                    protected_child_config, shrink_config)

DOC = Path(__file__).resolve().parents[2] / 'docs' / 'architectures.md'
README = Path(__file__).resolve().parents[2] / 'README.md'

def doc_rows() -> Dict[str, Tuple[str, List[str]]]:
    """family -> (status, points) from docs/architectures.md."""
    rows = {}
    for line in DOC.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip('|').split('|')]
        if len(cells) == 5 and cells[0] not in ('family', '---'):
            rows[cells[0]] = (cells[3], re.findall(r'`([^`]+)`', cells[2]))
    return rows


def test_every_family_mmseg_ships_has_a_representative_config():
    assert list_families() == sorted(FAMILIES)
    assert len(FAMILIES) == 53


def test_doc_has_one_row_per_family_and_at_least_45_work():
    rows = doc_rows()
    assert sorted(rows) == list_families()
    working = [family for family, (status, _) in rows.items() if status == 'ok']
    assert len(working) >= 45, f'only {len(working)} families work: {sorted(working)}'
    for family, (status, points) in rows.items():
        assert status in ('ok', 'failed')
        assert status == 'failed' or points, family


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
    table = markdown_table([FamilyResult('fcn', 'fcn.py', 'ok', ['backbone.layer4:output']),
                            FamilyResult('vpd', 'vpd.py', 'failed', [], 'config', 'a | b')])
    assert '**1 of 2 families work.**' in table
    assert '| fcn | `fcn.py` | `backbone.layer4:output` | ok | - |' in table
    assert r'| vpd | `vpd.py` | - | failed | config: a \| b |' in table
