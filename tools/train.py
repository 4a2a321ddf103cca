"""Train a segmentor with mmseg's own ``tools/train.py``, with mmseg-keyprotect loaded.

A thin wrapper: it imports the plugin (registering its components and the
weights-only checkpoint loader) and runs the ``tools/train.py`` shipped inside
the installed mmsegmentation package with the same arguments, so every flag
of mmseg's tool works (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``,
``--launcher``).

Example::

    python tools/train.py configs/demo/fcn_r18-d8_baseline_demo.py --resume
"""
import runpy
import sys
from pathlib import Path
from typing import List, Optional

import mmseg

import mmseg_keyprotect  # noqa: F401  (registers components and the checkpoint loader)

TOOL = 'train.py'


def mmseg_tool(name: str) -> Path:
    """The path of one of mmseg's own tools inside the installed package."""
    path = Path(mmseg.__file__).parent / '.mim' / 'tools' / name
    if not path.is_file():
        raise FileNotFoundError(f"mmseg's tools/{name} is not at {path}; reinstall "
                                'mmsegmentation from its wheel (pip install mmsegmentation)')
    return path


def main(argv: Optional[List[str]] = None) -> None:
    """Run mmseg's tool with ``argv`` (default: this process's arguments)."""
    tool = mmseg_tool(TOOL)
    sys.argv = [str(tool), *(sys.argv[1:] if argv is None else argv)]
    runpy.run_path(str(tool), run_name='__main__')


if __name__ == '__main__':
    main()
