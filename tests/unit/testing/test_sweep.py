"""The sweep over mmseg's model families and the table it generates (docs/architectures.md).

The sweep itself (it runs the key-condition test loop through mmengine's Runner and
reloads checkpoints in a fresh process): ``tests/e2e/test_sweep.py``.
"""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import pytest
import torch
from mmengine.config import Config

from mmseg_keyprotect.testing.sweep import (DEPTH_RATIO, EXTRA_INSTALL, FAMILIES, NEEDS_EXTRA,
                                            FamilyResult, changed_depth, changed_pixels,
                                            check_family, list_families, markdown_table,
                                            missing_extra, parse_table, protected_child_config,
                                            shrink_config)

REPO = Path(__file__).resolve().parents[3]
DOC = REPO / 'docs' / 'architectures.md'
README = REPO / 'README.md'


def doc_rows() -> Dict[str, Tuple[str, List[str]]]:
    """family -> (status, points) from docs/architectures.md."""
    return {r.family: (r.status, r.points) for r in parse_table(DOC.read_text())}


def doc_figures() -> Dict[str, Tuple[Optional[float], Optional[float]]]:
    """family -> (changed pixels plain, incorrect key) from docs/architectures.md."""
    return {r.family: (r.changed_plain, r.changed_incorrect)
            for r in parse_table(DOC.read_text())}


def test_every_family_mmseg_ships_has_a_representative_config():
    assert list_families() == sorted(FAMILIES)
    assert len(FAMILIES) == 53


def test_doc_has_one_row_per_family_and_every_family_works():
    rows = doc_rows()
    assert sorted(rows) == list_families()
    failed = {family: status for family, (status, _) in rows.items() if status != 'ok'}
    assert not failed, f'families that do not work: {failed}'
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
    # VPD's row comes from the whole run or from a later `make sweep FAMILIES="... vpd ..."`
    vpd_updates = [line for line in DOC.read_text().splitlines()
                   if line.startswith('Rows of ') and 'vpd' in line.split(' regenerated')[0]]
    assert 'stable-diffusion-sdkit 2.1.5' in (vpd_updates[-1] if vpd_updates else head)


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
    depth = protected_child_config('vpd', 'vpd.py', 'DepthEstimator', 'k')
    assert "type='KeyProtectedDepthEstimator'" in depth
    with pytest.raises(ValueError, match="'PanopticSegmentor' has no protected variant"):
        protected_child_config('x', 'x.py', 'PanopticSegmentor', 'k')


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


def test_parse_table_reads_back_what_markdown_table_writes():
    results = [FamilyResult('fcn', 'fcn.py', 'ok', ['backbone.layer4:output', 'a.b:input[1]'],
                            0.25, 0.125),
               FamilyResult('vpd', 'vpd.py', 'failed', [], stage='build', reason='a | b: c'),
               FamilyResult('convnext', 'c.py', NEEDS_EXTRA, [], stage='config', reason='r')]
    parsed = parse_table(markdown_table(results, '# header\n\n| a | b |\n|---|---|'))
    assert parsed == results
    assert markdown_table(parsed) == markdown_table(results)


def test_changed_depth_counts_pixels_past_the_d1_ratio():
    reference = torch.full((1, 1, 2, 2), 2.0)
    other = reference.clone()
    other[0, 0, 0, 0] = 2.0 * DEPTH_RATIO  # exactly the ratio: changed
    other[0, 0, 0, 1] = 2.0 / DEPTH_RATIO * 1.01  # nearer, within the ratio
    other[0, 0, 1, 1] = 0.0  # no depth at all: changed
    assert changed_depth(reference, other) == 0.5
    assert changed_depth(reference, reference) == 0.0


def test_a_family_without_its_extra_is_marked_not_built(monkeypatch, tmp_path):
    monkeypatch.setitem(FAMILIES, 'convnext',
                        dict(FAMILIES['convnext'], extra=('no_such_package_kp', 'torch')))
    assert missing_extra('convnext') == ['no_such_package_kp']
    result = check_family('convnext', tmp_path, tmp_path / 'owner.key', tmp_path / 'data')
    assert (result.status, result.stage) == (NEEDS_EXTRA, 'config')
    assert 'no_such_package_kp not installed' in result.reason and 'torch' not in result.reason
    assert not (tmp_path / 'convnext').exists()


@pytest.mark.skipif(importlib.util.find_spec('ldm') is not None,
                    reason="Stable Diffusion's ldm is installed here")
def test_vpd_without_ldm_says_how_to_install_it(tmp_path):
    result = check_family('vpd', tmp_path, tmp_path / 'owner.key', tmp_path / 'data')
    assert (result.status, result.stage) == (NEEDS_EXTRA, 'config')
    assert result.reason.startswith('ldm not installed: ') and EXTRA_INSTALL['ldm'] in result.reason


def test_families_extra_lists_the_packages_the_sweep_checks():
    extra = re.search(r"'families': \[([^\]]*)\]", (REPO / 'setup.py').read_text()).group(1)
    pinned = set(re.findall(r"'([\w-]+)==", extra))
    needed = {name for entry in FAMILIES.values() for name in entry.get('extra', ())}
    assert needed == {'mmdet', 'mmpretrain', 'ldm'}
    assert needed - set(EXTRA_INSTALL) <= pinned
    # what the extra cannot bring (stable-diffusion-sdkit's pins break torch 2.13), make sweep does
    sdkit = re.search(r'^SDKIT_SPEC \?= (\S+)$', (REPO / 'Makefile').read_text(), re.M).group(1)
    assert EXTRA_INSTALL['ldm'] == f'pip install --no-deps {sdkit}'
