"""The hooks on a tiny model, without a Runner: sealing on save, and the tamper matrix on load.

Every checkpoint here is what :class:`CheckpointSealHook` makes of a runner's
checkpoint (``state_dict``, SGD momentum, message hub, schedulers, meta),
written with ``torch.save`` and read back with the weights-only loader. Every
tampered file is refused in one line, before a weight or the optimizer is written.
"""
from __future__ import annotations

import copy
import io
import json
import uuid
from pathlib import Path
from types import SimpleNamespace
from typing import Any, Callable, Dict, List

import numpy as np
import pytest
import torch
from mmengine.logging import MessageHub
from mmseg.registry import MODELS

from mmseg_keyprotect.checkpoint import (MANIFEST_KEY, MARKER, META_KEY, META_MAC_KEY,
                                         TREE_MARKER, EncryptedWeightsError, read_header,
                                         safe_torch_load, sealing, tensors_with_paths,
                                         verify_file)
from mmseg_keyprotect.checkpoint.format import canonical
from mmseg_keyprotect.checkpoint.rollback import RECORD_NAME, read_record
from mmseg_keyprotect.engine import hooks as hooks_module
from mmseg_keyprotect.engine.hooks import (CheckpointSealHook, KeyProtectionHook,
                                           seal_runner_checkpoint)

#: A KeyProtectedEncoderDecoder small enough for a committed fixture (a few thousand weights).
TINY_BACKBONE = dict(type='ResNetV1c', depth=18, num_stages=2, out_indices=(1, ),
                     strides=(1, 2), dilations=(1, 1), base_channels=4, stem_channels=4)
TINY_HEAD = dict(type='FCNHead', in_channels=8, channels=4, num_convs=1, num_classes=3,
                 in_index=0)


def tiny_model(key, seed: int = 0, encrypt: bool = True) -> torch.nn.Module:
    torch.manual_seed(seed)
    return MODELS.build(dict(
        type='KeyProtectedEncoderDecoder', backbone=TINY_BACKBONE, decode_head=TINY_HEAD,
        data_preprocessor=dict(type='SegDataPreProcessor'),
        protection=dict(key=key, points=['decode_head.conv_seg:input'],
                        encrypt_weights=encrypt))).eval()


def fake_runner(model, work_dir: Path, **extra: Any) -> SimpleNamespace:
    """What the hooks read of a runner: model, message hub, work_dir, resume flags, hooks."""
    fields = dict(model=model, cfg=None, work_dir=str(work_dir), hooks=[],
                  message_hub=MessageHub.get_instance(f'test-{uuid.uuid4().hex}'),
                  _resume=False, _load_from=None)
    return SimpleNamespace(**{**fields, **extra})


def trained(key, seed: int = 0):
    model = tiny_model(key, seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    return model, optimizer


def save(runner, optimizer, iteration: int) -> bytes:
    """A checkpoint as ``Runner.save_checkpoint`` builds it, through both hooks, as bytes."""
    with sealing():  # the runner's own save
        state = runner.model.state_dict()
    runner.message_hub.update_info('iter', iteration)
    checkpoint = {
        'meta': {'epoch': 0, 'iter': iteration, 'seed': 0, 'dataset_meta': {'classes': ['a']}},
        'state_dict': state, 'message_hub': runner.message_hub.state_dict(),
        'optimizer': optimizer.state_dict(),  # shares the optimizer's per-parameter dicts
        'param_schedulers': [{'last_step': iteration, 'base_values': [0.1]}]}
    KeyProtectionHook().before_save_checkpoint(runner, checkpoint)
    CheckpointSealHook().before_save_checkpoint(runner, checkpoint)
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def load(data: bytes) -> Dict[str, Any]:
    return safe_torch_load(io.BytesIO(data), 'cpu')


def resume(runner, optimizer, checkpoint: Dict[str, Any]) -> None:
    """What ``Runner.resume`` does with a loaded checkpoint: hooks, weights, optimizer."""
    KeyProtectionHook().after_load_checkpoint(runner, checkpoint)
    runner.model.load_state_dict(checkpoint['state_dict'])
    optimizer.load_state_dict(checkpoint['optimizer'])


def snapshot(model, optimizer) -> List[torch.Tensor]:
    with sealing():
        weights = [v.clone() for v in model.state_dict().values()]
    return weights + [s['momentum_buffer'].clone() for s in optimizer.state.values()]


@pytest.fixture
def files(key, tmp_path):
    """(iter_2 bytes, iter_4 bytes, clear weights and momentum at iter 4, work_dir)."""
    model, optimizer = trained(key)
    runner = fake_runner(model, tmp_path / 'work')
    first = save(runner, optimizer, 2)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    return first, save(runner, optimizer, 4), snapshot(model, optimizer), tmp_path / 'work'


def _victim(key, work_dir: Path, **extra: Any):
    model, optimizer = trained(key, seed=7)
    return fake_runner(model, work_dir, **extra), optimizer


def test_a_sealed_checkpoint_resumes_to_the_same_weights_and_momentum(key, files):
    _, last, clear, work_dir = files
    runner, optimizer = _victim(key, work_dir, _resume=True)
    resume(runner, optimizer, load(last))
    assert all(torch.equal(a, b) for a, b in zip(snapshot(runner.model, optimizer), clear))


def test_sealing_leaves_the_live_model_and_optimizer_alone(key, tmp_path):
    model, optimizer = trained(key)
    before = snapshot(model, optimizer)
    save(fake_runner(model, tmp_path), optimizer, 2)
    assert all(torch.equal(a, b) for a, b in zip(snapshot(model, optimizer), before))


def test_every_group_is_listed_in_the_authenticated_manifest(key, files):
    checkpoint = load(files[1])
    manifest = verify_file(checkpoint, key)
    assert manifest['iter'] == 4 and len(manifest['run']) == 16
    assert {(g['entry'], g['marker']) for g in manifest['groups']} == {
        ('state_dict', MARKER), ('optimizer', TREE_MARKER)}
    assert set(manifest['state']) == {'meta', 'state_dict', 'message_hub', 'optimizer',
                                      'param_schedulers'}
    assert read_header(checkpoint['state_dict'][MARKER])['manifest'] is True
    assert read_record(files[3], key) == {manifest['run']: 4}


# ------------------------------------------------------------------------ the tamper matrix
def _flip_optimizer_bit(ckpt, other):
    ckpt['optimizer']['state'][0]['momentum_buffer'].view(-1).view(torch.uint8)[0] ^= 1


def _flip_weight_bit(ckpt, other):
    ckpt['state_dict']['backbone.stem.0.weight'].view(-1).view(torch.uint8)[3] ^= 1


def _swap_optimizer_tensor(ckpt, other):
    ckpt['optimizer']['state'][0] = other['optimizer']['state'][0]


def _edit_descriptor(ckpt, other):
    ckpt['meta'][META_KEY] = [e for e in ckpt['meta'][META_KEY]
                              if e['type'] != 'PointPermutation']


def _strip_mac(ckpt, other):
    del ckpt['meta'][META_MAC_KEY]


def _strip_everything(ckpt, other):
    del ckpt['meta'][META_MAC_KEY], ckpt['state_dict'][MARKER], ckpt['optimizer'][TREE_MARKER]


def _momentum_in_clear(ckpt, other):
    """The forger's momentum: SGD then moves every weight by an amount of their choosing."""
    del ckpt['optimizer'][TREE_MARKER]
    for state in ckpt['optimizer']['state'].values():
        state['momentum_buffer'] = torch.full_like(state['momentum_buffer'], 1e6)


def _meta(field: str, value: Any) -> Callable:
    def tamper(ckpt, other):
        ckpt['meta'][field] = value
    tamper.__name__ = f'_meta_{field}'
    return tamper


def _schedulers(ckpt, other):
    ckpt['param_schedulers'][0]['last_step'] = 999


def _message_hub(ckpt, other):
    ckpt['message_hub']['runtime_info']['iter'] = 999


def _swap_state_dict(ckpt, other):
    ckpt['state_dict'] = other['state_dict']


def _swap_optimizer(ckpt, other):
    ckpt['optimizer'] = other['optimizer']


def _drop_manifest(ckpt, other):
    del ckpt['meta'][MANIFEST_KEY]


def _edit_manifest(ckpt, other):
    manifest = json.loads(ckpt['meta'][MANIFEST_KEY])
    manifest['iter'] = 999
    ckpt['meta'][MANIFEST_KEY] = canonical(manifest).decode()


def _header_without(field: str) -> Callable:
    def tamper(ckpt, other):
        header = read_header(ckpt['state_dict'][MARKER])
        del header[field]
        ckpt['state_dict'][MARKER] = torch.from_numpy(np.frombuffer(canonical(header),
                                                                    np.uint8).copy())
    tamper.__name__ = f'_header_without_{field}'
    return tamper


def _tensor_in_meta(ckpt, other):
    ckpt['meta']['extra'] = torch.ones(3)


def _entry_added(ckpt, other):
    ckpt['extra'] = {'note': 1}


def _entry_removed(ckpt, other):
    del ckpt['param_schedulers']


def _optimizer_removed(ckpt, other):
    del ckpt['optimizer']


TAMPER_MATRIX = [
    (_flip_optimizer_bit, r"checkpoint\['optimizer'\]: tensor 'state.0.momentum_buffer' "
     r'failed authentication'),
    (_flip_weight_bit, r"'backbone.stem.0.weight' failed authentication"),
    (_swap_optimizer_tensor, 'failed authentication'),
    (_edit_descriptor, r'descriptor .* failed authentication: it was edited'),
    (_strip_mac, r'descriptor .* failed authentication'),
    (_strip_everything, 'not sealed'),
    (_momentum_in_clear, r"checkpoint\['optimizer'\] holds a tensor in clear"),
    (_meta('iter', 999), r"checkpoint\['meta'\] was edited"),
    (_meta('seed', 1), r"checkpoint\['meta'\] was edited"),
    (_meta('dataset_meta', {'classes': ['b']}), r"checkpoint\['meta'\] was edited"),
    (_schedulers, r"checkpoint\['param_schedulers'\] was edited"),
    (_message_hub, r"checkpoint\['message_hub'\] was edited"),
    (_swap_state_dict, r"checkpoint\['state_dict'\].*belongs to another file"),
    (_swap_optimizer, r"checkpoint\['optimizer'\].*belongs to another file"),
    (_drop_manifest, r'manifest .* was removed'),
    (_edit_manifest, r'manifest .* failed authentication'),
    (_header_without('salt'), r"no valid 'salt' field"),
    (_header_without('tensors'), r"no valid 'tensors' field"),
    (_tensor_in_meta, r"checkpoint\['meta'\] holds a tensor in clear"),
    (_entry_added, r"checkpoint\['extra'\] was added"),
    (_entry_removed, r"checkpoint\['param_schedulers'\] was removed"),
    (_optimizer_removed, r"checkpoint\['optimizer'\].*group the manifest lists is missing"),
]


@pytest.mark.parametrize('tamper, match', TAMPER_MATRIX, ids=[t.__name__.strip('_')
                                                               for t, _ in TAMPER_MATRIX])
def test_tamper_matrix(key, files, tamper, match):
    first, last, _, work_dir = files
    checkpoint, other = load(first), load(last)
    tamper(checkpoint, other)
    checkpoint = load(_bytes(checkpoint))  # as the forger writes it
    runner, optimizer = _victim(key, work_dir)
    before = snapshot(runner.model, optimizer)
    with pytest.raises(EncryptedWeightsError, match=match) as info:
        resume(runner, optimizer, checkpoint)
    assert '\n' not in str(info.value)
    assert all(torch.equal(a, b) for a, b in zip(snapshot(runner.model, optimizer), before))


def _bytes(checkpoint) -> bytes:
    buffer = io.BytesIO()
    torch.save(checkpoint, buffer)
    return buffer.getvalue()


def test_another_key_is_refused_before_anything_is_written(key, other_key, files):
    runner, optimizer = _victim(other_key, files[3])
    before = snapshot(runner.model, optimizer)
    with pytest.raises(EncryptedWeightsError, match=f'fingerprint {key.fingerprint}, but'):
        resume(runner, optimizer, load(files[1]))
    assert all(torch.equal(a, b) for a, b in zip(snapshot(runner.model, optimizer), before))


# ------------------------------------------------------------------------------ rollback
def test_resume_refuses_an_older_checkpoint_of_the_run(key, files):
    runner, optimizer = _victim(key, files[3], _resume=True)
    with pytest.raises(EncryptedWeightsError, match='iteration 2 of its run, but this work_dir '
                       'has saved iteration 4.*refusing to resume'):
        resume(runner, optimizer, load(files[0]))


def test_an_older_checkpoint_named_on_purpose_resumes_with_a_warning(key, files, monkeypatch):
    logged = []
    monkeypatch.setattr(hooks_module, 'print_log', lambda msg, **kw: logged.append(msg))
    runner, optimizer = _victim(key, files[3], _resume=True, _load_from='iter_2.pth')
    resume(runner, optimizer, load(files[0]))
    assert any('older file named by load_from' in m for m in logged)
    loaded = _victim(key, files[3])  # load_from without resume: no rollback check at all
    resume(*loaded, load(files[0]))


def test_an_edited_rollback_record_is_refused(key, files):
    record = files[3] / RECORD_NAME
    record.write_text(record.read_text().replace('4', '5'))
    runner, optimizer = _victim(key, files[3], _resume=True)
    with pytest.raises(EncryptedWeightsError, match='rollback record .* failed authentication'):
        resume(runner, optimizer, load(files[1]))


# ------------------------------------------------------------------ the last walk before writing
def test_what_a_later_hook_adds_is_sealed_arrays_and_meta_included(key, tmp_path):
    model, optimizer = trained(key)
    runner = fake_runner(model, tmp_path)
    checkpoint = load(save(runner, optimizer, 2))
    late = {'counts': np.arange(5, dtype=np.int64), 'weights': torch.randn(40)}
    checkpoint['late_hook'] = copy.deepcopy(late)
    checkpoint['meta']['norm'] = torch.randn(8)
    clear_norm = checkpoint['meta']['norm'].clone()
    seal_runner_checkpoint(runner, checkpoint)  # KeyProtectedRunner, after every hook
    stored = load(_bytes(checkpoint))
    assert not torch.equal(stored['late_hook']['weights'], late['weights'])
    assert isinstance(stored['late_hook']['counts'], torch.Tensor)
    victim, victim_optimizer = _victim(key, tmp_path)
    resume(victim, victim_optimizer, stored)
    assert np.array_equal(stored['late_hook']['counts'], late['counts'])
    assert isinstance(stored['late_hook']['counts'], np.ndarray)
    assert torch.equal(stored['late_hook']['weights'], late['weights'])
    assert torch.equal(stored['meta']['norm'], clear_norm)


@pytest.mark.parametrize('change', ['add to the optimizer', 'replace in meta', 'replace a weight'])
def test_a_sealed_group_changed_by_a_later_hook_is_sealed_again(key, tmp_path, change):
    """mmengine reuses one meta dict for the best and the last checkpoint: a hook that sets
    the same meta tensor every save replaces a tensor sealed a moment before."""
    model, optimizer = trained(key)
    runner = fake_runner(model, tmp_path)
    checkpoint = load(save(runner, optimizer, 2))
    new = torch.randn(6)
    if change == 'add to the optimizer':
        checkpoint['optimizer']['late'] = new
    elif change == 'replace in meta':
        checkpoint['meta']['norm'] = torch.randn(6)
        seal_runner_checkpoint(runner, checkpoint)
        checkpoint['meta']['norm'] = new
    else:
        new = torch.randn_like(checkpoint['state_dict']['decode_head.conv_seg.bias'])
        checkpoint['state_dict']['decode_head.conv_seg.bias'] = new
    seal_runner_checkpoint(runner, checkpoint)
    stored = load(_bytes(checkpoint))
    assert not any(torch.equal(t, new) for _, t in tensors_with_paths(stored))
    victim, victim_optimizer = _victim(key, tmp_path)
    resume(victim, victim_optimizer, stored)
    opened = {'add to the optimizer': lambda: stored['optimizer']['late'],
              'replace in meta': lambda: stored['meta']['norm'],
              'replace a weight': lambda: victim.model.decode_head.conv_seg.bias.detach()}[change]()
    assert torch.equal(opened, new)
    assert torch.equal(victim.model.backbone.stem[0].weight, model.backbone.stem[0].weight)


def test_a_tensor_outside_a_dict_entry_is_refused(key, tmp_path):
    model, optimizer = trained(key)
    runner = fake_runner(model, tmp_path)
    checkpoint = load(save(runner, optimizer, 2))
    checkpoint['loose'] = [torch.ones(4)]
    with pytest.raises(TypeError, match=r"checkpoint\['loose'\] is a list holding tensors"):
        seal_runner_checkpoint(runner, checkpoint)


def test_the_seal_hook_moves_behind_every_hook_and_starts_the_run(key, tmp_path):
    model, _ = trained(key)
    seal_hook, other = CheckpointSealHook(), KeyProtectionHook()
    runner = fake_runner(model, tmp_path)
    runner.hooks.extend([seal_hook, other])
    seal_hook.before_train(runner)
    assert runner.hooks == [other, seal_hook]
    run = runner.message_hub.get_info('keyprotect_run')
    assert run and hooks_module.run_identity(runner) == run


def test_an_unprotected_model_saves_the_descriptor_and_seals_nothing(key, tmp_path):
    model = tiny_model(key, encrypt=False)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    checkpoint = load(save(fake_runner(model, tmp_path), optimizer, 2))
    assert checkpoint['meta'][META_KEY] and MANIFEST_KEY not in checkpoint['meta']
    assert MARKER not in checkpoint['state_dict'] and not (tmp_path / RECORD_NAME).exists()
