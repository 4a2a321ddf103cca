"""The sweep over mmseg's model families reproduces the committed table (docs/architectures.md).

Each family runs the key-condition test loop through mmengine's Runner, and the
checkpoints are reloaded in a fresh process. The table's parsing and rendering:
``tests/unit/test_sweep.py``.
"""
from __future__ import annotations

from typing import List

import pytest

from mmseg_keyprotect.sweep import FamilyResult, run_sweep
from tests.unit.test_sweep import doc_rows

#: Families swept in CI: one of each kind of point placement (ResNet stages with an
#: auxiliary head, token features, HRNet's list outputs in a cascade, a point that exists only
#: in eval mode, heads with several outputs, ViT, saturating activations, small real-time
#: nets) and two that fail for a stated need. The slow test sweeps every family.
CI_FAMILIES = ['fcn', 'segformer', 'ocrnet', 'ddrnet', 'danet', 'cgnet', 'bisenetv2', 'vit',
               'mobilenet_v2', 'convnext', 'vpd']


def check_against_table(results: List[FamilyResult]) -> None:
    """Every swept family has the status and points the committed table shows.

    If this fails after a change, regenerate the table: ``python tools/sweep_families.py``.
    """
    rows = doc_rows()
    mismatches = []
    for result in results:
        assert result.status == 'ok' or (result.stage and result.reason), result
        status, points = rows[result.family]
        if (result.status, result.points if result.status == 'ok' else points) != \
                (status, points):
            mismatches.append(f'{result.family}: swept {result.status} {result.points} '
                              f'({result.stage}: {result.reason}); table: {status} {points}')
    assert not mismatches, '\n'.join(mismatches)


def test_sweep_of_ci_families_reproduces_the_table(tmp_path):
    results = run_sweep(CI_FAMILIES, tmp_path)
    assert [r.family for r in results] == CI_FAMILIES
    check_against_table(results)


@pytest.mark.slow
def test_sweep_of_every_family_reproduces_the_table(tmp_path):
    results = run_sweep(None, tmp_path)
    assert sum(r.status == 'ok' for r in results) >= 45
    check_against_table(results)
