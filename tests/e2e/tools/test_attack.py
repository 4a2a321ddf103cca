"""tools/attack.py end to end on a model trained 2 iterations: run, report, key-search."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any, Dict

import pytest

REPO = Path(__file__).resolve().parents[3]
VICTIM = REPO / 'configs' / 'demo' / 'fcn_r18-d8_perm-m6-seedkey_demo.py'
TOOL = REPO / 'tools' / 'attack.py'
ENV = dict(os.environ, PYTHONWARNINGS='ignore', OMP_NUM_THREADS='1')


def run(args, cwd, timeout=600):
    proc = subprocess.run([sys.executable, *map(str, args)], cwd=cwd, capture_output=True,
                          text=True, env=ENV, timeout=timeout)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    return proc.stdout


@pytest.fixture(scope='module')
def stolen(tmp_path_factory, tiny_run_overrides: Dict[str, Any]):
    """The seed-key Model-6 demo config trained 2 iterations (the 'stolen' checkpoint)."""
    cwd = tmp_path_factory.mktemp('attack')
    options = [f'{k}={v}' for k, v in tiny_run_overrides.items()]
    run([REPO / 'tools' / 'train.py', VICTIM, '--work-dir', cwd / 'victim',
         '--cfg-options', *options], cwd)
    data = [f'{loader}.dataset.data_root={tiny_run_overrides[f"{loader}.dataset.data_root"]}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    return dict(cwd=cwd, checkpoint=cwd / 'victim' / 'iter_2.pth', data=data)


def test_run_every_attack_then_report(stolen):
    cwd = stolen['cwd']
    attack_cfg = cwd / 'perm-m6.py'
    attack_cfg.write_text(
        f"_base_ = ['{REPO}/configs/attacks/_base_/demo_attacks.py']\n"
        f"victim = dict(config='{VICTIM}', checkpoint='{stolen['checkpoint']}')\n"
        "head_modules = ['decode_head.conv_seg']\nbudgets = [2]\nfractions = [0.25]\n")
    out = cwd / 'results.jsonl'
    run([TOOL, 'run', attack_cfg, '--out', out, '--work-dir', cwd / 'attacks',
         '--score-recovery', '--cfg-options', *stolen['data']], cwd)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r['kind'] for r in rows] == ['scratch', 'finetune', 'head_only', 'adapter',
                                         'sinkhorn']
    assert {r['victim'] for r in rows} == {'scratch', 'perm-m6'}
    assert all(r['train_images'] == 2 and r['budget'] == 2 for r in rows)
    assert all(0 <= r['mIoU'] <= 100 for r in rows)
    sinkhorn = rows[-1]
    assert set(sinkhorn['recovered']) == {'decode_head.conv_seg:input'}
    assert 0 <= sinkhorn['recovered']['decode_head.conv_seg:input'] <= 1
    # a second run skips what is done
    run([TOOL, 'run', attack_cfg, '--out', out, '--work-dir', cwd / 'attacks',
         '--cfg-options', *stolen['data']], cwd)
    assert len(out.read_text().splitlines()) == 5
    plot = cwd / 'attacks.png'
    text = run([TOOL, 'report', out, '--budget', '2', '--plot', plot,
                '--out', cwd / 'report' / 'attacks'], cwd)
    assert '| perm-m6 | 25% (2 images) |' in text
    assert plot.stat().st_size > 1000
    assert (cwd / 'report' / 'attacks.md').read_text().strip() == text.strip()
    assert len(json.loads((cwd / 'report' / 'attacks.json').read_text())['rows']) == 5


def test_key_search_cli(stolen):
    out = stolen['cwd'] / 'search.json'
    run([TOOL, 'key-search', VICTIM, stolen['checkpoint'], '--seeds', '3', '--images', '2',
         '--true-seed', '7361', '--out', out, '--cfg-options', *stolen['data']], stolen['cwd'])
    report = json.loads(out.read_text())
    assert report['seeds_tried'] == 3 and report['recovered'] is False  # 7361 not in 0..2
    assert report['keys_per_second'] > 0
    assert float(report['expected_years_for_256_bit_key']) > 1e50


@pytest.mark.slow
def test_weight_matching_attack_on_a_model_protected_after_training(tmp_path, tiny_run_overrides):
    """A post-hoc protected model stored in clear (no encrypt_weights) and the public weights
    it was 'fine-tuned' from (the same weights, 1 % drift): the suite's weight_matching row."""
    import torch
    from mmengine.config import Config
    from mmseg.registry import MODELS
    from mmseg.utils import register_all_modules

    from mmseg_keyprotect.keys import SecretKey
    from mmseg_keyprotect.posthoc import absorb_permutations

    register_all_modules()
    baseline = REPO / 'configs' / 'demo' / 'fcn_r18-d8_baseline_demo.py'
    torch.manual_seed(0)
    plain = MODELS.build(Config.fromfile(str(baseline)).model).eval()
    key_file = SecretKey.generate().save(tmp_path / 'owner.key')
    point = 'backbone.layer1:input'
    absorbed = absorb_permutations(plain, [point], SecretKey.from_file(key_file))
    torch.save({'state_dict': absorbed.state_dict, 'meta': {}}, tmp_path / 'stolen.pth')
    generator = torch.Generator().manual_seed(1)
    public = {n: t + 0.01 * t.float().std() * torch.randn(t.shape, generator=generator)
              if t.is_floating_point() and t.numel() > 1 else t
              for n, t in plain.state_dict().items()}
    torch.save({'state_dict': public}, tmp_path / 'public.pth')
    victim = tmp_path / 'victim.py'
    victim.write_text(f"_base_ = ['{baseline}']\nmodel = dict(type='KeyProtectedEncoderDecoder', "
                      f"protection=dict(key=dict(file='{key_file}'), points=['{point}']))\n")
    attack_cfg = tmp_path / 'matching.py'
    attack_cfg.write_text(
        f"_base_ = ['{REPO}/configs/attacks/_base_/demo_attacks.py']\n"
        f"victim = dict(config='{victim}', checkpoint='{tmp_path / 'stolen.pth'}', "
        f"reference='{tmp_path / 'public.pth'}')\n"
        "attacks = ['finetune', 'weight_matching']\nbudgets = [2]\nfractions = [0.25]\n")
    out = tmp_path / 'results.jsonl'
    data = [f'{loader}.dataset.data_root={tiny_run_overrides[f"{loader}.dataset.data_root"]}'
            for loader in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    run([TOOL, 'run', attack_cfg, '--out', out, '--work-dir', tmp_path / 'attacks',
         '--cfg-options', *data], tmp_path)
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r['kind'] for r in rows] == ['finetune', 'weight_matching']
    matching = rows[1]
    assert 0 <= matching['matched_mIoU'] <= 100 and 0 <= matching['mIoU'] <= 100
    assert (tmp_path / 'attacks' / 'matching' / 'weight_matching_f0.25_it2_s0' /
            'matched_init.pth').is_file()
    text = run([TOOL, 'report', out, '--budget', '2'], tmp_path)
    assert 'weight_matching' in text and '(matched: ' in text
