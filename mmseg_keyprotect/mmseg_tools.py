"""Run mmseg's own command-line tools (shipped under ``mmseg/.mim/tools``) with the plugin loaded."""
from __future__ import annotations

import runpy
import sys
from pathlib import Path
from typing import List, Optional

import mmseg


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


def run_mmseg_tool(name: str, argv: Optional[List[str]] = None) -> None:
    """Run mmseg's tool ``name`` as ``__main__`` with ``argv`` (default: this process's)."""
    tool = mmseg_tool(name)
    sys.argv = [str(tool), *(sys.argv[1:] if argv is None else argv)]
    runpy.run_path(str(tool), run_name='__main__')
