"""No module imports a private name (``_x``) from another package.

Scans the package, the tools and the tests with ``ast``. Within one subpackage of
``mmseg_keyprotect`` (``models``, ``engine``, ...) private helpers may be shared; across
subpackages, and from other distributions, only public names are imported. The one
exception is the compatibility loader for torch < 2.5, which must extend torch's own
weights-only allowlist and pickle's Python 2 name table (listed below, with the reason).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Iterator, List, Tuple

REPO = Path(__file__).resolve().parents[2]
#: (file, imported module, name): torch < 2.5's restricted unpickler needs torch's
#: weights-only allowlist and the stdlib table pickle itself uses for protocol 2 names.
ALLOWED = {
    ('mmseg_keyprotect/checkpoint/safe_load.py', 'torch', '_weights_only_unpickler'),
    ('mmseg_keyprotect/checkpoint/safe_load.py', '_compat_pickle', ''),
}


def _package_of(path: Path) -> Tuple[str, ...]:
    """('mmseg_keyprotect', 'models') for mmseg_keyprotect/models/x.py; ('tools',) ..."""
    parts = path.relative_to(REPO).with_suffix('').parts
    if parts[0] == 'mmseg_keyprotect':
        return parts[:2] if len(parts) > 2 else parts[:1]
    return parts[:1]


def _module_of(path: Path, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ''
    parts = list(path.relative_to(REPO).with_suffix('').parts)  # .../pkg/module or __init__
    base = parts[:-node.level]
    return '.'.join(base + ([node.module] if node.module else []))


def _private(name: str) -> bool:
    return name.startswith('_') and not (name.startswith('__') and name.endswith('__'))


def imports(path: Path) -> Iterator[Tuple[str, str]]:
    """(module, name) of every import in ``path`` (name '' for ``import module``)."""
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom):
            module = _module_of(path, node)
            for alias in node.names:
                yield module, alias.name
        elif isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name, ''


def violations(path: Path) -> List[str]:
    found = []
    mine = _package_of(path)
    for module, name in imports(path):
        dotted = module.split('.') + ([name] if name else [])
        private = [p for p in dotted if _private(p)]
        if not private:
            continue
        if dotted[0] == 'mmseg_keyprotect':
            source = tuple(dotted[:2]) if len(dotted) > 2 else tuple(dotted[:1])
            if mine[0] == 'mmseg_keyprotect' and source == mine:
                continue  # a helper shared inside one subpackage
        rel = str(path.relative_to(REPO))
        if (rel, module, name) in ALLOWED:
            continue
        found.append(f'{rel}: from {module} import {name}' if name else f'{rel}: import {module}')
    return found


def test_no_private_names_imported_across_packages():
    files = [p for top in ('mmseg_keyprotect', 'tools', 'tests')
             for p in (REPO / top).rglob('*.py')]
    assert len(files) > 50
    bad = [v for path in files for v in violations(path)]
    assert not bad, '\n'.join(bad)


def test_the_scan_finds_a_private_import(monkeypatch):
    """The checker itself: a cross-package private import is reported, a local one is not."""
    sample = REPO / 'mmseg_keyprotect' / 'attacks' / 'config.py'
    monkeypatch.setattr(Path, 'read_text', lambda self, *a, **k: (
        'from ..protection import _strip\nfrom .runner import _helper\n'
        'from mmengine.runner.checkpoint import _load_checkpoint\n'))
    assert violations(sample) == [
        'mmseg_keyprotect/attacks/config.py: from mmseg_keyprotect.protection import _strip',
        'mmseg_keyprotect/attacks/config.py: from mmengine.runner.checkpoint import '
        '_load_checkpoint']
