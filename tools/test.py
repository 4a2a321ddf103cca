"""Test a checkpoint with mmseg's own ``tools/test.py``, with mmseg-keyprotect loaded.

A thin wrapper: it imports the plugin (registering its components and the
weights-only checkpoint loader) and runs the ``tools/test.py`` shipped inside
the installed mmsegmentation package with the same arguments, so every flag
of mmseg's tool works (``--work-dir``, ``--out``, ``--show-dir``, ``--tta``,
``--cfg-options``, ``--launcher``).

Example::

    python tools/test.py configs/demo/fcn_r18-d8_baseline_demo.py CHECKPOINT
"""
import mmseg_keyprotect  # noqa: F401  (registers components and the checkpoint loader)
from mmseg_keyprotect.mmseg_tools import run_mmseg_tool

if __name__ == '__main__':
    run_mmseg_tool('test.py')
