"""Registry sweep: every component the plugin registers builds from a config dict.

A component added without an entry in ``EXAMPLES`` fails
``test_every_component_has_an_example``, so nothing is registered untested.
"""
from __future__ import annotations

import warnings

import pytest
from mmengine.registry import Registry
from mmseg import registry as mmseg_registry

import mmseg_keyprotect  # noqa: F401

KEY = dict(seed=11)
# name -> (registry name, config dict). Keys come from a source, as in real configs.
EXAMPLES = {
    'BlockShuffle': ('TRANSFORMS', dict(type='BlockShuffle', block_size=4, key=KEY)),
    'BlockNegPos': ('TRANSFORMS', dict(type='BlockNegPos', block_size=4, key=KEY)),
    'BlockFFX': ('TRANSFORMS', dict(type='BlockFFX', block_size=4, key=KEY)),
}


def plugin_components():
    """(registry name, component name) for everything registered by mmseg_keyprotect."""
    found = []
    for reg_name in dir(mmseg_registry):
        registry = getattr(mmseg_registry, reg_name)
        if not isinstance(registry, Registry):
            continue
        for name, obj in registry.module_dict.items():
            if getattr(obj, '__module__', '').startswith('mmseg_keyprotect'):
                found.append((reg_name, name))
    return sorted(set(found))


def test_plugin_registers_the_three_ciphers():
    names = {name for _, name in plugin_components()}
    assert {'BlockShuffle', 'BlockNegPos', 'BlockFFX'} <= names


def test_every_component_has_an_example():
    missing = [f'{reg}.{name}' for reg, name in plugin_components() if name not in EXAMPLES]
    assert not missing, f'add a config example to EXAMPLES for: {missing}'


@pytest.mark.parametrize('reg_name, name', plugin_components())
def test_component_builds_from_config(reg_name, name):
    expected_registry, cfg = EXAMPLES[name]
    assert reg_name == expected_registry
    registry = getattr(mmseg_registry, reg_name)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        obj = registry.build(dict(cfg))
    assert obj is not None
    assert 'seed=11' not in repr(obj)
