"""What every benchmark shares: interleaved timing and the machine line of its table."""
from __future__ import annotations

import platform
import time
from typing import Callable, Dict, List

import numpy as np

def interleaved_times(fns: Dict[str, Callable[[], object]], repeats: int,
                      warmup: int = 2) -> Dict[str, List[float]]:
    """Time every function ``repeats`` times, round-robin, after ``warmup`` rounds."""
    times: Dict[str, List[float]] = {name: [] for name in fns}
    for round_ in range(warmup + repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            fn()
            elapsed = time.perf_counter() - start
            if round_ >= warmup:
                times[name].append(elapsed)
    return times


def machine_line() -> str:
    import torch
    return (f'{platform.processor() or platform.machine()}, Python {platform.python_version()}, '
            f'numpy {np.__version__}, torch {torch.__version__}, '
            f'{torch.get_num_threads()} torch threads')
