"""Train a segmentor with mmseg's own ``tools/train.py``, with mmseg-keyprotect loaded.

A thin wrapper: it imports the plugin (registering its components and the
weights-only checkpoint loader) and runs the ``tools/train.py`` shipped inside
the installed mmsegmentation package with the same arguments, so every flag
of mmseg's tool works (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``,
``--launcher``).

Example::

    python tools/train.py configs/demo/fcn_r18-d8_baseline_demo.py --resume
"""
import mmseg_keyprotect  # noqa: F401  (registers components and the checkpoint loader)
from mmseg_keyprotect.mmseg_tools import run_mmseg_tool

if __name__ == '__main__':
    run_mmseg_tool('train.py')
