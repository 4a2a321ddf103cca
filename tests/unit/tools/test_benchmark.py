"""tools/benchmark.py: one subcommand per module of tools/bench/, no import circle."""
from __future__ import annotations

import ast
import sys
from pathlib import Path

import pytest

TOOLS = Path(__file__).resolve().parents[3] / 'tools'
BENCH = TOOLS / 'bench'


@pytest.fixture(scope='module')
def benchmark():
    sys.path.insert(0, str(TOOLS))
    try:
        import benchmark
        yield benchmark
    finally:
        sys.path.remove(str(TOOLS))


def test_every_bench_module_is_a_subcommand(benchmark):
    modules = {p.stem for p in BENCH.glob('*.py')} - {'__init__', 'common'}
    assert set(benchmark.BENCHMARKS) == modules
    for name, module in benchmark.benchmark_modules().items():
        assert callable(module.run) and callable(module.add_arguments), name
        args = benchmark.parse_args([name])
        assert args.command == name


def test_bench_modules_do_not_import_the_entry_point():
    """The circle of the old layout (benchmark.py <-> bench_*.py) stays gone."""
    for path in BENCH.glob('*.py'):
        for node in ast.walk(ast.parse(path.read_text())):
            names = ([a.name for a in node.names] if isinstance(node, ast.Import) else
                     [node.module or ''] if isinstance(node, ast.ImportFrom) else [])
            assert not any(n == 'benchmark' or n.startswith('benchmark.') for n in names), path


def test_unknown_subcommand_is_refused(benchmark, capsys):
    with pytest.raises(SystemExit):
        benchmark.parse_args(['nope'])
    assert "invalid choice: 'nope'" in capsys.readouterr().err
