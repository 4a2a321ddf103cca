"""Package boundaries: only protection/ sees keyed parts by type; subpackages import in one direction.

Scans the source with ``ast`` (nothing is imported):

* outside ``mmseg_keyprotect/protection/``, no module (nor a tool) tests whether
  an object is a keyed part (``isinstance``/``issubclass`` against a keyed type),
  and only the module that defines where a model holds its keyed parts (the
  weight-encryption and points attributes) reads them: the rest asks :class:`~mmseg_keyprotect.protection.Protection`;
* the subpackages and top-level modules of ``mmseg_keyprotect`` import each
  other without a cycle, counting imports inside functions too (a lazy import
  hides a cycle, it does not remove it).
"""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / 'mmseg_keyprotect'

#: The keyed types (interfaces and implementations) only protection/ may test for.
KEYED_TYPES = {
    'KeyedComponent', 'ImageCipher', 'FeaturePermutation', 'KeyedWeights', 'BlockCipher',
    'BlockShuffle', 'BlockNegPos', 'BlockFFX', 'ChannelPermutation', 'PointPermutation',
    'BlockCipherSegDataPreProcessor', '_WeightEncryption'
}
#: Where a model holds keyed parts: constant -> (the module that defines it, its value).
HOLDERS = {
    '_ATTR': ('mmseg_keyprotect/models/weight_encryption.py', '_keyprotect_weight_encryption'),
    'POINTS_ATTR': ('mmseg_keyprotect/models/points.py', 'keyprotect_points'),
}


def sources() -> List[Path]:
    return sorted(PACKAGE.rglob('*.py')) + sorted((REPO / 'tools').rglob('*.py'))


def _rel(path: Path) -> str:
    return path.relative_to(REPO).as_posix()


def _names(node: ast.expr) -> Iterator[str]:
    """The class names an ``isinstance`` second argument mentions (``a.B`` -> ``B``)."""
    if isinstance(node, ast.Tuple):
        for element in node.elts:
            yield from _names(element)
    elif isinstance(node, ast.Name):
        yield node.id
    elif isinstance(node, ast.Attribute):
        yield node.attr


def type_tests(tree: ast.AST) -> List[Tuple[int, str]]:
    """``(line, type)`` of every ``isinstance``/``issubclass`` against a keyed type."""
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and \
                node.func.id in ('isinstance', 'issubclass') and len(node.args) == 2:
            found += [(node.lineno, name) for name in _names(node.args[1])
                      if name in KEYED_TYPES]
    return found


def holder_reads(rel: str, tree: ast.AST) -> List[Tuple[int, str]]:
    """``(line, what)`` where ``rel`` names where a model holds its keyed parts.

    Only the module that defines such an attribute uses it.
    """
    found = []
    for node in ast.walk(tree):
        for constant, (home, value) in HOLDERS.items():
            if rel == home:
                continue
            if isinstance(node, ast.Constant) and node.value == value:
                found.append((node.lineno, repr(value)))
            elif (isinstance(node, ast.Name) and node.id == constant) or \
                    (isinstance(node, ast.alias) and node.name == constant):
                found.append((getattr(node, 'lineno', 0), constant))
    return found


def test_only_protection_tests_the_type_of_a_keyed_part():
    found = {}
    for path in sources():
        rel = _rel(path)
        if rel.startswith('mmseg_keyprotect/protection/'):
            continue
        tree = ast.parse(path.read_text(), rel)
        bad = [f'line {line}: isinstance(..., {name})' for line, name in type_tests(tree)]
        bad += [f'line {line}: reads {what}' for line, what in holder_reads(rel, tree)]
        if bad:
            found[rel] = bad
    assert not found, ('ask Protection (data_ciphers, permutations, points, '
                       f'weight_encryption, keyed_modules) instead: {found}')


def test_the_scan_finds_what_it_looks_for():
    tree = ast.parse('isinstance(a, (int, ChannelPermutation))\n'
                     'isinstance(b, blocks.BlockCipher)\nisinstance(c, KeyedThing)\n'
                     "getattr(m, '_keyprotect_weight_encryption')\ngetattr(m, POINTS_ATTR)\n")
    assert type_tests(tree) == [(1, 'ChannelPermutation'), (2, 'BlockCipher')]
    assert sorted(holder_reads('mmseg_keyprotect/x.py', tree)) == [
        (4, "'_keyprotect_weight_encryption'"), (5, 'POINTS_ATTR')]
    assert holder_reads(HOLDERS['POINTS_ATTR'][0], ast.parse('getattr(m, POINTS_ATTR)')) == []


def _unit(path: Path) -> Optional[str]:
    """``models`` for mmseg_keyprotect/models/x.py, ``keyed`` for keyed.py, None for __init__."""
    parts = path.relative_to(PACKAGE).with_suffix('').parts
    return None if parts == ('__init__', ) else parts[0]


def _imported(path: Path, node: ast.AST) -> Iterator[str]:
    """The dotted names an import statement in ``path`` imports."""
    if isinstance(node, ast.Import):
        yield from (alias.name for alias in node.names)
    elif isinstance(node, ast.ImportFrom):
        if node.level:
            base = list(path.relative_to(REPO).with_suffix('').parts)[:-node.level]
            module = '.'.join(base + ([node.module] if node.module else []))
        else:
            module = node.module or ''
        yield module
        yield from (f'{module}.{alias.name}' for alias in node.names)


def import_graph() -> Dict[str, Dict[str, str]]:
    """unit -> {unit it imports: the first file that does}, over the package's units."""
    units = {_unit(p) for p in PACKAGE.rglob('*.py')} - {None}
    graph: Dict[str, Dict[str, str]] = {}
    for path in sorted(PACKAGE.rglob('*.py')):
        unit = _unit(path)
        if unit is None:  # the package __init__ imports everything to register it
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            for name in _imported(path, node):
                parts = name.split('.')
                if parts[0] == 'mmseg_keyprotect' and len(parts) > 1 and \
                        parts[1] in units and parts[1] != unit:
                    graph.setdefault(unit, {}).setdefault(parts[1], _rel(path))
    return graph


def find_cycle(graph: Dict[str, Dict[str, str]]) -> Optional[List[str]]:
    """One cycle of ``graph`` as ``[a, b, ..., a]``, or None."""
    state: Dict[str, int] = {}  # 1: on the stack, 2: done
    stack: List[str] = []

    def visit(node: str) -> Optional[List[str]]:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, {})):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt):] + [nxt]
            if nxt not in state:
                cycle = visit(nxt)
                if cycle:
                    return cycle
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            cycle = visit(node)
            if cycle:
                return cycle
    return None


def test_no_import_cycle_between_subpackages():
    graph = import_graph()
    assert 'protection' in graph and 'keys' in graph['protection']  # the scan sees imports
    cycle = find_cycle(graph)
    assert cycle is None, ' -> '.join(
        f'{a} ({graph[a][b]})' for a, b in zip(cycle, cycle[1:])) + f' -> {cycle[-1]}'


def test_find_cycle():
    assert find_cycle({'a': {'b': ''}, 'b': {'c': ''}}) is None
    assert find_cycle({'a': {'b': ''}, 'b': {'c': ''}, 'c': {'a': ''}}) == ['a', 'b', 'c', 'a']
