"""Importing the plugin registers components and changes nothing else of mmengine.

Each check runs in a fresh interpreter, so nothing imported by other tests interferes.
The reference state is an interpreter where mmseg has registered its own modules (what
mmseg's tools do first; mmcv then adds its layers to mmengine's registries).
"""
from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from typing import Any, Dict

SNAPSHOT = textwrap.dedent('''
    import json, sys
    import mmseg.registry as mmseg_registry
    import torch
    from mmengine import registry as mmengine_registry
    from mmengine.dist import utils as dist_utils
    from mmengine.runner import CheckpointLoader
    from mmengine.registry import Registry
    from mmseg.utils import register_all_modules

    register_all_modules(init_default_scope=False)

    def name(fn):
        return f'{fn.__module__}.{fn.__qualname__}'

    def registries(module):
        return {n: sorted(r.module_dict) for n, r in sorted(vars(module).items())
                if isinstance(r, Registry)}

    def snapshot():
        return dict(
            mmengine=registries(mmengine_registry),
            mmseg=registries(mmseg_registry),
            loaders={k: name(v) for k, v in CheckpointLoader._schemes.items()},
            launcher=name(dist_utils._init_dist_pytorch),
            launcher_code=dist_utils._init_dist_pytorch.__code__.co_filename,
            torch_load=name(torch.load),
            safe_globals=sorted(map(str, torch.serialization.get_safe_globals())),
            modules=sorted(m for m in sys.modules if m.split('.')[0] in ('scipy', 'mmseg_keyprotect')),
        )
''')


def run(body: str) -> Dict[str, Any]:
    """Run ``SNAPSHOT + body`` in a fresh interpreter; ``body`` prints one JSON line."""
    proc = subprocess.run([sys.executable, '-c', SNAPSHOT + textwrap.dedent(body)],
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads(proc.stdout.strip().splitlines()[-1])


def test_import_registers_components_and_changes_nothing_else():
    result = run('''
        before = snapshot()
        import mmseg_keyprotect
        print(json.dumps(dict(before=before, after=snapshot())))
    ''')
    before, after = result['before'], result['after']
    # mmengine: registries, checkpoint loaders, launcher and torch untouched.
    for field in ('mmengine', 'loaders', 'launcher', 'launcher_code', 'torch_load',
                  'safe_globals'):
        assert after[field] == before[field], field
    # mmseg: only additions, and exactly the plugin's components.
    added = {n: sorted(set(after['mmseg'][n]) - set(before['mmseg'][n])) for n in before['mmseg']}
    assert all(set(before['mmseg'][n]) <= set(after['mmseg'][n]) for n in before['mmseg'])
    assert 'KeyProtectedEncoderDecoder' in added['MODELS']
    assert 'BlockShuffle' in added['TRANSFORMS']
    assert {'KeyConditionTestLoop', 'KeyConditionValLoop'} <= set(added['LOOPS'])
    assert {'KeyProtectionHook', 'CheckpointSealHook'} <= set(added['HOOKS'])
    assert 'KeyProtectedRunner' in added['RUNNERS']
    # the attack suite (and scipy) is not loaded, and registers nothing
    assert 'AttackedSegmentor' not in after['mmseg']['MODELS']
    assert not [m for m in after['modules'] if m.startswith('mmseg_keyprotect.attacks')]
    assert [m for m in after['modules'] if m.startswith('scipy')] == \
        [m for m in before['modules'] if m.startswith('scipy')]


def test_light_imports_do_not_change_mmengine_either():
    result = run('''
        before = snapshot()
        from mmseg_keyprotect.keys import SecretKey  # what tools/keygen.py imports
        from mmseg_keyprotect.protection import Protection
        print(json.dumps(dict(before=before, after=snapshot())))
    ''')
    for field in ('mmengine', 'loaders', 'launcher_code', 'torch_load', 'safe_globals'):
        assert result['after'][field] == result['before'][field], field


def test_compat_is_the_explicit_opt_in_and_can_be_undone():
    result = run('''
        before = snapshot()
        import mmseg_keyprotect.compat as compat
        installed = snapshot()
        compat.uninstall()
        print(json.dumps(dict(before=before, installed=installed, after=snapshot())))
    ''')
    before, installed = result['before'], result['installed']
    assert set(installed['loaders']) == set(before['loaders'])
    assert all(loader.startswith('mmseg_keyprotect.checkpoint.safe_load.')
               for loader in installed['loaders'].values())
    # the CPU launcher wraps mmengine's, keeping its name (functools.wraps) but not its code
    assert installed['launcher_code'] != before['launcher_code']
    assert result['after']['loaders'] == before['loaders']
    assert result['after']['launcher_code'] == before['launcher_code']


def test_attack_suite_registers_when_imported():
    result = run('''
        import mmseg_keyprotect.attacks
        print(json.dumps(snapshot()))
    ''')
    assert 'AttackedSegmentor' in result['mmseg']['MODELS']
