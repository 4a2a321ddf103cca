"""mmseg_keyprotect.apis: init_protected_model, protected_inferencer, evaluate_key_conditions."""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict

import pytest
import torch
from mmengine.config import Config
from mmseg.apis import inference_model

from mmseg_keyprotect import Protection
from mmseg_keyprotect.apis import (KeySetupError, evaluate_key_conditions, init_protected_model,
                                   protected_inferencer)
from mmseg_keyprotect.engine import KeyProtectedRunner
from mmseg_keyprotect.keys import SecretKey, replace_key_sources
from mmseg_keyprotect.protection import KeyMismatchError

REPO = Path(__file__).resolve().parents[2]
CONFIG = REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6-encw_demo.py'


@pytest.fixture(scope='module')
def trained(tmp_path_factory, tiny_run_overrides: Dict[str, Any]) -> Dict[str, Any]:
    """The Model-6 + encrypted-weights demo config trained 2 iterations (key from env)."""
    cwd = tmp_path_factory.mktemp('apis')
    key = SecretKey.generate()
    key_file = key.save(cwd / 'owner.key')
    cfg = Config.fromfile(str(CONFIG))
    cfg.merge_from_dict(tiny_run_overrides)
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(cwd)
        replace_key_sources(cfg, dict(file=str(key_file)))
        cfg.work_dir = str(cwd / 'train')
        KeyProtectedRunner.from_cfg(cfg).train()
    config = cwd / 'config.py'
    config.write_text(f"_base_ = ['{CONFIG}']\nkey = dict(file='{key_file}')\n"
                      "model = dict(protection=dict(key=key))\n")
    image = sorted((Path(tiny_run_overrides['test_dataloader.dataset.data_root']) /
                    'JPEGImages').glob('val_*.jpg'))[0]
    return dict(cwd=cwd, key=key, key_file=key_file, config=str(config),
                checkpoint=str(cwd / 'train' / 'iter_2.pth'), image=str(image),
                overrides=tiny_run_overrides)


def logits(model, image: str) -> torch.Tensor:
    return inference_model(model, image).seg_logits.data


def test_conditions_give_three_models(trained):
    correct = init_protected_model(trained['config'], trained['checkpoint'])
    plain = init_protected_model(trained['config'], trained['checkpoint'], condition='plain')
    wrong = init_protected_model(trained['config'], trained['checkpoint'],
                                 condition='incorrect', seed=3)
    by_key = init_protected_model(trained['config'], trained['checkpoint'],
                                  key=trained['key_file'])
    out = {name: logits(m, trained['image']) for name, m in
           dict(correct=correct, plain=plain, wrong=wrong, by_key=by_key).items()}
    torch.testing.assert_close(out['by_key'], out['correct'])
    assert not torch.allclose(out['plain'], out['correct'])
    assert not torch.allclose(out['wrong'], out['correct'])
    # the correct model switched to plain equals plain use only in the permutation: the
    # plain model (no key) still has the sealed weights, so it differs from both
    with Protection.of(correct).applied('plain'):
        assert not torch.allclose(logits(correct, trained['image']), out['correct'])
    assert [p.key_condition for p in Protection.of(plain).parts
            if type(p).__name__ != '_WeightEncryption'] == ['plain']


def test_plain_reads_no_key(trained, tmp_path, monkeypatch):
    config = tmp_path / 'missing_key.py'
    config.write_text(f"_base_ = ['{trained['config']}']\nkey = dict(file='nowhere.key')\n"
                      "model = dict(protection=dict(key=key))\n")
    monkeypatch.chdir(tmp_path)
    init_protected_model(str(config), trained['checkpoint'], condition='plain')
    with pytest.raises(KeySetupError, match='nowhere.key'):
        init_protected_model(str(config), trained['checkpoint'])


def test_wrong_key_is_refused_before_building(trained, tmp_path):
    other = SecretKey.generate()
    with pytest.raises(KeyMismatchError) as err:
        init_protected_model(trained['config'], trained['checkpoint'],
                             key=other.save(tmp_path / 'other.key'))
    assert other.fingerprint in str(err.value) and trained['key'].fingerprint in str(err.value)
    assert other.export_hex() not in str(err.value)


def test_inferencer_follows_the_condition(trained):
    correct = protected_inferencer(trained['config'], trained['checkpoint'])
    plain = protected_inferencer(trained['config'], trained['checkpoint'], condition='plain')
    a = correct(trained['image'], return_datasamples=True).seg_logits.data
    b = plain(trained['image'], return_datasamples=True).seg_logits.data
    assert not torch.allclose(a, b)


def test_evaluate_key_conditions(trained, tmp_path):
    report = evaluate_key_conditions(trained['config'], trained['checkpoint'],
                                     work_dir=str(tmp_path / 'eval'), incorrect=2,
                                     cfg_options=trained['overrides'])
    assert set(report['summary']) == {'correct', 'plain', 'incorrect'}
    assert report['summary']['incorrect']['num_keys'] == 2
    assert {'type': 'WeightEncryption', 'key': trained['key'].fingerprint} in report['protection']
    assert report['metrics']['correct/mIoU'] == report['summary']['correct']['mIoU']
    assert (tmp_path / 'eval' / 'key_conditions.md').is_file()
