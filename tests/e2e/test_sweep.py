"""The sweep over mmseg's model families reproduces the committed table, one test per family.

Each family runs the key-condition test loop through mmengine's Runner, and the
checkpoints are reloaded in a fresh process. The families selected in a session
are swept together (one reload process), and each is checked by its own test,
so a family that fails fails alone. Families whose configs import a package of
the ``families`` extra are skipped where it is not installed. The table's parsing
and rendering: ``tests/unit/testing/test_sweep.py``.
"""
from __future__ import annotations

import warnings
from typing import Callable, Dict, List

import pytest

from mmseg_keyprotect.testing.sweep import FamilyResult, list_families, missing_extra, run_sweep
from tests.unit.testing.test_sweep import doc_figures, doc_rows

#: Families swept in CI: one of each kind of point placement (ResNet stages with an
#: auxiliary head, token features, HRNet's list outputs in a cascade, ViT, heads with several
#: outputs, a small real-time net) and three families of the families extra (run where it is
#: installed: mask heads from mmdet, a backbone from mmpretrain, VPD's depth estimator on
#: Stable Diffusion's `ldm`). The other families are slow tests.
CI_FAMILIES = ['fcn', 'segformer', 'ocrnet', 'vit', 'danet', 'mobilenet_v2', 'mask2former',
               'convnext', 'vpd']
SLOW_FAMILIES = [f for f in list_families() if f not in CI_FAMILIES]

_SWEPT: Dict[str, FamilyResult] = {}


def _selected_families(request: pytest.FixtureRequest) -> List[str]:
    """The families of every test of this module selected in the session (collection order)."""
    families = []
    for item in request.session.items:
        params = getattr(getattr(item, 'callspec', None), 'params', {})
        if item.module is request.module and 'family' in params:
            families.append(params['family'])
    return families


@pytest.fixture
def swept(request: pytest.FixtureRequest, tmp_path_factory) -> Callable[[str], FamilyResult]:
    """family -> its sweep result; the first call sweeps every selected family that can run."""
    def result(family: str) -> FamilyResult:
        missing = missing_extra(family)
        if missing:
            pytest.skip(f"{family} needs the families extra (pip install -e '.[families]'): "
                        f"{', '.join(missing)} not installed")
        if family not in _SWEPT:
            todo = [f for f in dict.fromkeys(_selected_families(request) + [family])
                    if f not in _SWEPT and not missing_extra(f)]
            with warnings.catch_warnings():
                warnings.simplefilter('ignore')
                results = run_sweep(todo, tmp_path_factory.mktemp('sweep'))
            _SWEPT.update((r.family, r) for r in results)
        return _SWEPT[family]
    return result


def check_against_table(result: FamilyResult) -> None:
    """``result`` has the status and points its row in the committed table shows.

    If this fails after a change, regenerate the table: ``make sweep``.
    """
    assert result.status == 'ok' or (result.stage and result.reason), result
    status, points = doc_rows()[result.family]
    assert result.status == status, f'{result.family}: swept {result.status} ' \
        f'({result.stage}: {result.reason}); table: {status}'
    if result.status == 'ok':
        assert result.points == points
        assert all(0 <= f <= 1 for f in (result.changed_plain, result.changed_incorrect))
        assert doc_figures()[result.family] != (None, None)


@pytest.mark.parametrize('family', CI_FAMILIES)
def test_family_reproduces_its_row(family, swept):
    check_against_table(swept(family))


@pytest.mark.slow
@pytest.mark.parametrize('family', SLOW_FAMILIES)
def test_slow_family_reproduces_its_row(family, swept):
    check_against_table(swept(family))
