"""Every checkpoint of an encrypt_weights run is sealed whole; resume, EMA and tampering.

One small run of the recommended demo config (six permutation points +
encrypted weights) through :class:`KeyProtectedRunner` with an ``EMAHook``
that starts late (its warm-up copies the weights every iteration before), and
a hook that adds a tensor, a numpy array and a tensor in ``meta`` to every
checkpoint from behind ``CheckpointSealHook``; checkpoints at iterations 2 and
4, all kept. The tamper matrix itself is a unit test
(``tests/unit/engine/test_hooks.py``); here a few rows go through the runner.
"""
from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Dict, List, Tuple

import numpy as np
import pytest
import torch
from mmengine.config import Config
from mmengine.hooks import Hook
from mmengine.runner import CheckpointLoader
from mmseg.registry import HOOKS, RUNNERS

from mmseg_keyprotect.attacks.stolen_files import correlation_audit, rank_correlation, tensors_of
from mmseg_keyprotect.checkpoint import (MARKER, META_KEY, META_MAC_KEY, TREE_MARKER,
                                         EncryptedWeightsError, open_checkpoint, verify_file)
from mmseg_keyprotect.protection import ProtectionMismatchError
from mmseg_keyprotect.keys import SecretKey

REPO = Path(__file__).resolve().parents[2]
ENCW = REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m1to6-encw_demo.py'
MAX_ITERS = 4


@HOOKS.register_module(force=True)
class LateEntryHook(Hook):
    """Adds clear state to every checkpoint, and runs after ``CheckpointSealHook`` once training starts."""

    priority = 'LOWEST'

    def before_train_iter(self, runner, batch_idx: int, data_batch: Any = None) -> None:
        if runner.hooks[-1] is not self:
            runner.hooks.remove(self)
            runner.hooks.append(self)

    def before_save_checkpoint(self, runner, checkpoint: Dict[str, Any]) -> None:
        stem = runner.model.backbone.stem[0].weight.detach().clone()
        checkpoint['late_entry'] = {'stem': stem, 'counts': np.arange(stem.numel())}
        checkpoint['meta']['late_tensor'] = stem.clone()


def demo_config(config: Path, key_file: Path) -> Config:
    """A demo config reading ``key_file`` (the variable is set only while it is parsed)."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv('KP_DEMO_KEY_FILE', str(key_file))
        return Config.fromfile(str(config))


def build_runner(config: Path, work_dir: Path, key_file: Path, overrides: Dict[str, Any],
                 ema: bool = True, **extra: Any):
    cfg = demo_config(config, key_file)
    cfg.merge_from_dict(overrides)
    cfg.merge_from_dict({
        'train_cfg.max_iters': MAX_ITERS, 'train_cfg.val_interval': 2,
        'default_hooks.checkpoint.interval': 2, 'default_hooks.checkpoint.max_keep_ckpts': -1,
        # no dropout: a resumed run must repeat the uninterrupted one exactly
        'model.decode_head.dropout_ratio': 0.0, 'model.auxiliary_head.dropout_ratio': 0.0,
        'work_dir': str(work_dir), **extra})
    cfg.custom_hooks = [dict(type='EMAHook', begin_iter=3, momentum=0.1),
                        dict(type='LateEntryHook')] if ema else []
    return RUNNERS.build(cfg)


def losses(runner) -> List[float]:
    return [float(v) for v in runner.message_hub.get_scalar('train/loss').data[0]]


@pytest.fixture(scope='module')
def run(tmp_path_factory, tiny_run_overrides) -> Tuple[Path, Dict[str, torch.Tensor], Any, Path]:
    """(work_dir, trained weights and optimizer state in clear, runner, key file)."""
    root = tmp_path_factory.mktemp('sealed_run')
    key_file = SecretKey.generate().save(root / 'owner.key')
    runner = build_runner(ENCW, root / 'work', key_file, tiny_run_overrides)
    runner.train()
    clear = {f'model/{k}': v.detach().clone() for k, v in runner.model.state_dict().items()}
    for index, state in runner.optim_wrapper.optimizer.state_dict()['state'].items():
        for name, value in state.items():
            if isinstance(value, torch.Tensor):
                clear[f'optimizer/{index}/{name}'] = value.detach().clone()
    return root / 'work', clear, runner, key_file


def load(path: Path) -> Dict[str, Any]:
    return CheckpointLoader.load_checkpoint(str(path), map_location='cpu')


def reference(clear: Dict[str, torch.Tensor], runner) -> Dict[str, torch.Tensor]:
    """:func:`correlation_audit`'s reference: weights, momentum and weights by param index."""
    out = {k: v for k, v in clear.items() if k.startswith('model/')}
    out.update({f'optimizer/state/{k[len("optimizer/"):]}': v for k, v in clear.items()
                if k.startswith('optimizer/')})
    out.update({f'param/{i}': p.detach() for i, p in enumerate(runner.model.parameters())})
    return out


def test_every_tensor_of_every_file_is_sealed(run):
    work_dir, clear, runner, key_file = run
    key = SecretKey.from_file(key_file)
    files = sorted(work_dir.glob('*.pth'))
    assert {'iter_2.pth', 'iter_4.pth'} <= {f.name for f in files}
    clear_bytes = {v.numpy().tobytes() for v in clear.values() if v.numel() >= 16}
    for file in files:
        checkpoint = load(file)
        assert MARKER in checkpoint['state_dict']
        assert f'module.{MARKER}' in checkpoint['ema_state_dict']
        if file.name.startswith('iter_'):  # best_* checkpoints hold no optimizer state
            assert TREE_MARKER in checkpoint['optimizer']
        assert TREE_MARKER in checkpoint['late_entry'] and TREE_MARKER in checkpoint['meta']
        assert isinstance(checkpoint['late_entry']['counts'], torch.Tensor)  # sealed as a tensor
        for path, value in tensors_of(checkpoint):
            assert value.numel() < 16 or value.numpy().tobytes() not in clear_bytes, path
        assert verify_file(checkpoint, key)['iter'] == checkpoint['meta']['iter']
        open_checkpoint(checkpoint, key, checkpoint['meta'][META_KEY])  # every tag holds
        assert torch.equal(checkpoint['meta']['late_tensor'], checkpoint['late_entry']['stem'])
    rows = correlation_audit(str(work_dir), reference(clear, runner), min_size=2048)
    assert {r['tensor'].split('/')[1] for r in rows} == {'state_dict', 'optimizer',
                                                         'ema_state_dict'}
    worst = max(rows, key=lambda r: r['abs_r'])
    assert worst['abs_r'] < 0.1, worst


def test_momentum_in_clear_would_have_matched_the_weights(run):
    """The check above can fail: unsealed momentum buffers track their weights."""
    _, clear, runner, _ = run
    ref = reference(clear, runner)
    scores = [rank_correlation(v, ref[f'param/{k.split("/")[2]}']) for k, v in ref.items()
              if k.endswith('momentum_buffer') and v.numel() >= 2048]
    assert max(scores) >= 0.1


def test_meta_holds_an_authenticated_descriptor_and_no_key(run):
    work_dir, _, _, key_file = run
    checkpoint = load(work_dir / 'iter_4.pth')
    descriptor = checkpoint['meta'][META_KEY]
    key = SecretKey.from_file(key_file)
    assert {'type': 'WeightEncryption', 'key': key.fingerprint} in descriptor
    assert len(checkpoint['meta'][META_MAC_KEY]) == 64
    assert key.export_hex() not in repr(checkpoint['meta'])


def test_resume_refuses_a_rolled_back_checkpoint(run, tiny_run_overrides, tmp_path):
    """``last_checkpoint`` pointed back at iter_2 (a rollback): --resume refuses it."""
    work_dir, _, _, key_file = run
    copy_dir = tmp_path / 'work'
    copy_dir.mkdir()
    for file in work_dir.iterdir():
        if file.is_file():
            (copy_dir / file.name).write_bytes(file.read_bytes())
    (copy_dir / 'last_checkpoint').write_text(str(copy_dir / 'iter_2.pth'))
    resumed = build_runner(ENCW, copy_dir, key_file, tiny_run_overrides, resume=True)
    with pytest.raises(EncryptedWeightsError, match='refusing to resume from an older'):
        resumed.train()


def test_resume_from_a_sealed_checkpoint_repeats_the_uninterrupted_run(run, tiny_run_overrides):
    work_dir, _, runner, key_file = run
    resumed = build_runner(ENCW, work_dir.parent / 'resumed', key_file, tiny_run_overrides,
                           resume=True, load_from=str(work_dir / 'iter_2.pth'))
    resumed.train()
    assert resumed.iter == MAX_ITERS
    assert losses(resumed)[-2:] == losses(runner)[-2:]
    for (name, a), b in zip(runner.model.state_dict().items(),
                            resumed.model.state_dict().values()):
        assert torch.equal(a, b), name
    ema = [h for h in runner.hooks if type(h).__name__ == 'EMAHook'][0].ema_model
    ema_resumed = [h for h in resumed.hooks if type(h).__name__ == 'EMAHook'][0].ema_model
    for a, b in zip(ema.state_dict().values(), ema_resumed.state_dict().values()):
        assert torch.equal(a, b)


def _flip_optimizer_bit(ckpt, other):
    state = ckpt['optimizer']['state']
    tensor = state[next(iter(state))]['momentum_buffer']
    tensor.view(-1).view(torch.uint8)[0] ^= 1


def _swap_optimizer_tensor(ckpt, other):
    first = next(iter(ckpt['optimizer']['state']))
    ckpt['optimizer']['state'][first] = other['optimizer']['state'][first]


def _edit_descriptor(ckpt, other):
    ckpt['meta'][META_KEY] = [e for e in ckpt['meta'][META_KEY]
                              if e['type'] != 'PointPermutation']


def _strip_everything(ckpt, other):
    del ckpt['meta'][META_MAC_KEY]
    for entry in [e for e in ckpt.values() if isinstance(e, dict)]:
        for marker in [k for k in entry if k == TREE_MARKER or str(k).endswith(MARKER)]:
            del entry[marker]


def _strip_mac(ckpt, other):
    del ckpt['meta'][META_MAC_KEY]


def _swap_state_dict(ckpt, other):
    ckpt['state_dict'] = other['state_dict']


@pytest.mark.parametrize('tamper, error, match', [
    (_flip_optimizer_bit, EncryptedWeightsError, r"checkpoint\['optimizer'\]: tensor "
     r"'state.\d+.momentum_buffer' failed authentication"),
    (_swap_optimizer_tensor, EncryptedWeightsError, 'failed authentication'),
    (_edit_descriptor, EncryptedWeightsError, 'descriptor .* failed authentication: it was edited'),
    (_strip_mac, EncryptedWeightsError, 'descriptor .* failed authentication'),
    (_strip_everything, EncryptedWeightsError, 'not sealed'),
    # a whole, authentic state_dict of another checkpoint of the same run and key
    (_swap_state_dict, EncryptedWeightsError, r"checkpoint\['state_dict'\].*belongs to another "
     'file'),
])
def test_checkpoint_tamper_matrix(run, tiny_run_overrides, tmp_path, tamper, error, match):
    work_dir, _, _, key_file = run
    checkpoint, other = load(work_dir / 'iter_2.pth'), load(work_dir / 'iter_4.pth')
    tamper(checkpoint, other)
    torch.save(checkpoint, tmp_path / 'tampered.pth')
    victim = build_runner(ENCW, tmp_path / 'victim', key_file, tiny_run_overrides, ema=False)
    before = copy.deepcopy(victim.model.state_dict())
    with pytest.raises(error, match=match) as info:
        victim.load_checkpoint(str(tmp_path / 'tampered.pth'))
    assert '\n' not in str(info.value)
    for name, value in victim.model.state_dict().items():
        assert torch.equal(value, before[name]), f'{name} was written'


def test_checkpoint_of_another_key_is_refused(run, tiny_run_overrides, tmp_path):
    work_dir, _, _, key_file = run
    other = SecretKey.generate().save(tmp_path / 'other.key')
    victim = build_runner(ENCW, tmp_path / 'victim', other, tiny_run_overrides, ema=False)
    before = copy.deepcopy(victim.model.state_dict())
    fingerprint = SecretKey.from_file(key_file).fingerprint
    with pytest.raises(EncryptedWeightsError, match=f'fingerprint {fingerprint}, but'):
        victim.load_checkpoint(str(work_dir / 'iter_2.pth'))
    for name, value in victim.model.state_dict().items():
        assert torch.equal(value, before[name]), name


def test_an_unprotected_config_cannot_use_the_keyed_checkpoint_silently(run, tiny_run_overrides,
                                                                        tmp_path):
    """A config without encrypt_weights sees a protection mismatch, not weights."""
    work_dir, _, _, key_file = run
    victim = build_runner(REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m1to6_demo.py',
                          tmp_path / 'victim', key_file, tiny_run_overrides, ema=False)
    with pytest.raises(ProtectionMismatchError, match='WeightEncryption'):
        victim.load_checkpoint(str(work_dir / 'iter_2.pth'))


def test_training_without_sealing_is_refused(tiny_run_overrides, tmp_path):
    from mmengine.runner import Runner
    key_file = SecretKey.generate().save(tmp_path / 'owner.key')
    cfg = demo_config(ENCW, key_file)
    cfg.merge_from_dict(tiny_run_overrides)
    cfg.work_dir = str(tmp_path / 'w')
    cfg.val_cfg = dict(type='ValLoop')
    runner = Runner.from_cfg(cfg)  # mmengine's runner, no KeyConditionValLoop: nothing seals
    with pytest.raises(RuntimeError, match='nothing seals the checkpoints'):
        runner.train()
    assert not list((tmp_path / 'w').glob('*.pth'))
