"""Registry sweep, the components a runner builds: loops, and runners from ``runner_type``.

Each is built from its ``EXAMPLES`` entry with :func:`build_example`, as
``tests/unit/test_registry.py`` builds every other registered component.
"""
from __future__ import annotations

import uuid
import warnings
from pathlib import Path

import pytest
from mmengine.config import Config
from mmengine.runner import Runner
from mmseg import registry as mmseg_registry

from tests.unit.test_registry import RUNNER_BUILT, build_example, plugin_components


@pytest.fixture(scope='module')
def runner(data_root, tmp_path_factory) -> Runner:
    """A real runner (demo config) for components built by a runner, such as loops."""
    cfg = Config.fromfile(str(Path(__file__).parents[2] / 'configs' / 'demo' /
                              'fcn_r18-d8_baseline_demo.py'))
    cfg.work_dir = str(tmp_path_factory.mktemp('work'))
    cfg.experiment_name = f'registry_{uuid.uuid4().hex[:8]}'
    for split in ('train_dataloader', 'val_dataloader', 'test_dataloader'):
        cfg[split].dataset.data_root = data_root
        cfg[split].num_workers = 0
        cfg[split].persistent_workers = False
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return Runner.from_cfg(cfg)


@pytest.fixture(scope='module')
def protected_runner(data_root, tmp_path_factory) -> Runner:
    """The seed-key demo config (a published key) built by its runner_type."""
    cfg = Config.fromfile(str(Path(__file__).parents[2] / 'configs' / 'demo' /
                              'fcn_r18-d8_perm-m6-seedkey_demo.py'))
    cfg.work_dir = str(tmp_path_factory.mktemp('work'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return mmseg_registry.RUNNERS.build(cfg)


@pytest.mark.parametrize('reg_name, name', [(reg_name, name)
                                            for reg_name, name in plugin_components()
                                            if reg_name in RUNNER_BUILT])
def test_component_builds_from_config(reg_name, name, request):
    build_example(reg_name, name, request)
