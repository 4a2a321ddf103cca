"""Test harnesses that check the plugin against the toolbox (not imported by the package).

:mod:`mmseg_keyprotect.testing.sweep` protects every model family mmseg ships
with ``points='auto'`` and checks each one (``tools/dev/sweep_families.py``,
``tests/e2e/test_sweep.py``).
"""
