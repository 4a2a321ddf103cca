"""The test layout: tests/unit/ runs no runner and starts no process, and mirrors the package.

A unit test file is ``tests/unit/<path>/test_<name>.py`` for the module or package
``mmseg_keyprotect/<path>/<name>`` (``tests/unit/tools/test_<name>.py`` for
``tools/<name>.py``, ``tests/unit/tools/dev/`` for ``tools/dev/``), or one of the few
files listed in :data:`CROSS_CUTTING`.
What runs through mmengine's Runner, mmseg's tools or another process is in tests/e2e/.
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import List

UNIT = Path(__file__).resolve().parent
TESTS = UNIT.parent
REPO = TESTS.parent
PACKAGE = REPO / 'mmseg_keyprotect'

#: What a unit test must not do, as its source reads.
FORBIDDEN = {
    "imports mmengine's Runner": r'from mmengine\.runner import[^\n]*\bRunner\b',
    'builds a runner': r'\bRunner\.from_cfg\b|\bRunner\(|RUNNERS\.build\(',
    'uses KeyProtectedRunner': r'\bKeyProtectedRunner\s*[.(]|import[^\n]*\bKeyProtectedRunner\b',
    'runs a runner': r'\brunner\)?\.(train|val|test)\(\)',
    'starts a process': r'\bsubprocess\b|\bos\.system\(|torch\.distributed\.run|\btorchrun\b',
}
#: (file, what it may do): why.
EXEMPT = {
    ('test_import_side_effects.py', 'starts a process'):
    'imports the plugin in a fresh interpreter (what an import changes can only be seen '
    'there); runs no runner and no tool',
}
#: Unit test files that test across the package rather than one module of it.
CROSS_CUTTING = {
    'configs/test_attack_configs.py',
    'configs/test_feature_permutation_configs.py',
    'configs/test_protocol_configs.py',
    'configs/test_stanford_configs.py',
    'configs/test_two_line_protection.py',
    'test_bad_input_matrix.py',
    'test_determinism.py',
    'test_docs.py',
    'test_import_side_effects.py',
    'test_layout.py',
    'test_no_key_leaks.py',
    'test_package_boundaries.py',
    'test_private_imports.py',
    'test_registry.py',
    'test_secrecy.py',
}


def unit_test_files() -> List[str]:
    return sorted(p.relative_to(UNIT).as_posix() for p in UNIT.rglob('test_*.py'))


def violations(path: Path) -> List[str]:
    text = path.read_text()
    return [what for what, pattern in FORBIDDEN.items() if re.search(pattern, text)]


def mirrored(rel: str) -> bool:
    """Whether ``tests/unit/<rel>`` names a module or package it tests."""
    *folders, file = Path(rel).parts
    name = file[len('test_'):-len('.py')]
    if folders[:1] == ['tools']:  # tools/ and tools/dev/
        return REPO.joinpath(*folders, f'{name}.py').is_file()
    where = PACKAGE.joinpath(*folders, name)
    return where.with_suffix('.py').is_file() or (where / '__init__.py').is_file()


def test_unit_tests_run_no_runner_and_start_no_process():
    found = {}
    for rel in unit_test_files():
        if rel == 'test_layout.py':  # names the patterns it looks for
            continue
        bad = [what for what in violations(UNIT / rel) if (rel, what) not in EXEMPT]
        if bad:
            found[rel] = bad
    assert not found, f'these belong in tests/e2e/: {found}'


def test_the_patterns_find_the_e2e_tests_and_every_exemption_is_needed():
    flagged = {what for path in (TESTS / 'e2e').rglob('test_*.py') for what in violations(path)}
    assert flagged == set(FORBIDDEN)
    for rel, what in EXEMPT:
        assert what in violations(UNIT / rel), f'{rel} no longer needs its exemption'


def test_unit_tests_mirror_the_package():
    assert mirrored('test_keys.py') and mirrored('protection/test_conditions.py')
    assert mirrored('models/test_data_preprocessor.py') and mirrored('tools/test_infer.py')
    assert not mirrored('test_no_such_module.py') and not mirrored('evaluation/test_conditions.py')
    unmatched = [rel for rel in unit_test_files() if not mirrored(rel) and rel not in CROSS_CUTTING]
    assert not unmatched, (f'{unmatched} mirror no module of mmseg_keyprotect/ (or tools/): '
                           'rename or move them, or list them in CROSS_CUTTING')
    stale = sorted(rel for rel in CROSS_CUTTING
                   if rel not in unit_test_files() or mirrored(rel))
    assert not stale, f'remove from CROSS_CUTTING: {stale}'
