"""Train a segmentor with mmseg's own ``tools/train.py``, with mmseg-keyprotect loaded.

A thin wrapper: it imports the plugin (registering its components) and its
opt-in fixes (:mod:`mmseg_keyprotect.compat`: the weights-only checkpoint loaders and
the CPU-only launcher, so any config, also one without the plugin's runner, loads
checkpoints safely on torch >= 2.6), and runs the ``tools/train.py`` shipped inside
the installed mmsegmentation package with the same arguments, so every flag
of mmseg's tool works (``--work-dir``, ``--resume``, ``--amp``, ``--cfg-options``,
``--launcher``).

Example::

    python tools/train.py configs/demo/fcn_r18-d8_baseline_demo.py --resume
"""
import mmseg_keyprotect  # noqa: F401  (registers components)
import mmseg_keyprotect.compat  # noqa: F401  (weights-only loaders, CPU-only launcher)
from mmseg_keyprotect.mmseg_tools import run_mmseg_tool

if __name__ == '__main__':
    run_mmseg_tool('train.py')
