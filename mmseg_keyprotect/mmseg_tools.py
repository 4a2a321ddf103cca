"""Run mmseg's own command-line tools (shipped under ``mmseg/.mim/tools``) with the plugin loaded."""
from __future__ import annotations

import contextlib
import runpy
import sys
from pathlib import Path
from typing import Iterator, List, Optional

import mmseg
from mmengine.runner import Runner


def mmseg_tool(name: str) -> Path:
    """The path of one of mmseg's own tools (``'train.py'``, ``'test.py'`` ...).

    Raises:
        FileNotFoundError: if the installed mmsegmentation does not ship it.
    """
    path = Path(mmseg.__file__).parent / '.mim' / 'tools' / name
    if not path.is_file():
        raise FileNotFoundError(f"mmseg's tools/{name} is not at {path}; reinstall "
                                'mmsegmentation from its wheel (pip install mmsegmentation)')
    return path


@contextlib.contextmanager
def honour_runner_type() -> Iterator[None]:
    """Make ``Runner.from_cfg(cfg)`` build ``cfg.runner_type`` while the block runs.

    mmseg 1.2.2's ``tools/train.py`` builds the runner of ``runner_type``
    (``RUNNERS.build(cfg)``), but its ``tools/test.py`` always calls
    ``Runner.from_cfg(cfg)``, so a protected config's
    :class:`~mmseg_keyprotect.engine.runner.KeyProtectedRunner` (which redacts
    key sources from what it writes) would be skipped there. Scoped to the
    command-line wrappers of this repository (``tools/train.py``,
    ``tools/test.py``); mmengine is left as it was on exit.
    """
    from mmseg.registry import RUNNERS
    original = Runner.__dict__['from_cfg']

    def from_cfg(cls, cfg):
        if cls is Runner and cfg.get('runner_type') not in (None, 'Runner'):
            return RUNNERS.build(cfg)
        return original.__func__(cls, cfg)

    Runner.from_cfg = classmethod(from_cfg)
    try:
        yield
    finally:
        Runner.from_cfg = original


def run_mmseg_tool(name: str, argv: Optional[List[str]] = None) -> None:
    """Run mmseg's tool ``name`` as ``__main__`` with ``argv`` (default: this process's).

    ``runner_type`` is honoured by every tool (:func:`honour_runner_type`).
    """
    tool = mmseg_tool(name)
    sys.argv = [str(tool), *(sys.argv[1:] if argv is None else argv)]
    with honour_runner_type():
        runpy.run_path(str(tool), run_name='__main__')
