"""engine.launcher: the CPU-only pytorch launcher, without starting a process group."""
from __future__ import annotations

import pytest
from mmengine.dist import utils as dist_utils

from mmseg_keyprotect.engine import launcher


def test_other_launchers_and_accelerators_are_left_to_mmengine(monkeypatch):
    assert launcher.init_cpu_process_group('none', {'backend': 'gloo'}) is False
    assert launcher.init_cpu_process_group('slurm', {'backend': 'gloo'}) is False
    monkeypatch.setattr(launcher, '_has_accelerator', lambda: True)
    assert launcher.init_cpu_process_group('pytorch', {'backend': 'nccl'}) is False


def test_nccl_on_cpu_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(launcher, '_has_accelerator', lambda: False)
    with pytest.raises(ValueError, match="backend='gloo'"):
        launcher.init_cpu_process_group('pytorch', {'backend': 'nccl'})


def test_install_wraps_and_uninstall_restores_mmengines_launcher():
    original = dist_utils._init_dist_pytorch
    was_installed = launcher.cpu_launcher_installed()
    launcher.uninstall_cpu_launcher()
    mmengine_own = dist_utils._init_dist_pytorch
    try:
        launcher.install_cpu_launcher()
        launcher.install_cpu_launcher()  # idempotent: wraps once
        assert dist_utils._init_dist_pytorch is not mmengine_own
        assert dist_utils._init_dist_pytorch.__wrapped__ is mmengine_own
        launcher.uninstall_cpu_launcher()
        assert dist_utils._init_dist_pytorch is mmengine_own
    finally:
        if was_installed:
            launcher.install_cpu_launcher()
    assert (dist_utils._init_dist_pytorch is original) or was_installed
