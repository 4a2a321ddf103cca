"""Benchmarks for mmseg-keyprotect, reported as ratios measured in one run.

Usage:
    python tools/benchmark.py ciphers [--size 512] [--repeats 30]
    python tools/benchmark.py conditions [--size 128] [--images 16] [--incorrect 100]
    python tools/benchmark.py permutation [--size 256] [--batch 2] [--repeats 5]
    python tools/benchmark.py throughput [--device cpu] [--rounds 5] [--share]
    python tools/benchmark.py checkpoint [--repeats 5]
    python tools/benchmark.py posthoc [--size 128] [--repeats 3]
    python tools/benchmark.py all

Each subcommand (a module of ``tools/bench/``) interleaves the variants it compares
(A, B, C, A, B, C, ...) so that machine noise hits all of them alike, and prints a
markdown table to paste into ``docs/benchmarks.md``.
"""
from __future__ import annotations

import argparse
import importlib
import warnings
from types import ModuleType
from typing import Dict, List, Optional

#: Subcommand -> module of tools/bench/ (``add_arguments(parser)``, ``run(args)``).
BENCHMARKS = ('ciphers', 'conditions', 'permutation', 'throughput', 'checkpoint', 'posthoc')


def benchmark_modules() -> Dict[str, ModuleType]:
    """Every benchmark module, by subcommand."""
    return {name: importlib.import_module(f'bench.{name}') for name in BENCHMARKS}


def parse_args(argv: Optional[List[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    for name, module in benchmark_modules().items():
        command = sub.add_parser(name, help=module.__doc__.splitlines()[0])
        module.add_arguments(command)
    sub.add_parser('all', help='every benchmark with its default options')
    return parser.parse_args(argv)


def main(argv: Optional[List[str]] = None) -> None:
    args = parse_args(argv)
    names = BENCHMARKS if args.command == 'all' else (args.command,)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for name in names:
            run_args = parse_args([name]) if args.command == 'all' else args
            importlib.import_module(f'bench.{name}').run(run_args)


if __name__ == '__main__':
    main()
