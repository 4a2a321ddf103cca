"""Attacks on a model protected after training against the same model trained under the key.

The experiment behind docs/security.md section 8, on the Stanford Background Dataset
(prepare it with tools/prepare_stanford_background.py). The threat is the one where
protection after training is weakest: the model was fine-tuned from *public* weights, and
the thief holds both those public weights and the protected weights in clear (a deployment
that keeps them decrypted).

1. The 500 training images are split in two halves (alternate ids): *public* and *owner*.
2. A public model is trained on the public half (mmseg's tools/train.py); anyone has it.
3. The owner fine-tunes it on the owner half twice, with the same schedule:
   - plainly, then protects the result with tools/protect.py (``points='auto'``, no
     training): the victim *protected after training*;
   - under the key, with the same points (``KeyProtectedEncoderDecoder``): the victim
     *trained under the key*.
4. Both are tested under the key conditions (mmseg's tools/test.py; 143 test images).
5. The thief's copy of each: the weights as the keyed model holds them, in clear.
6. tools/attack.py runs every attack on both (fine-tune, head-only, adapter, Sinkhorn,
   weight matching against the public model; training from scratch for reference) with 1 %
   and 10 % of the training data (5 and 50 of the owner's images), scored on the test split;
   the public model itself is scored too (what the thief has without stealing anything).
7. tools/attack.py report writes one table (OUT/report.md, OUT/report.json).

Finished steps are skipped, so an interrupted run resumes::

    python tools/posthoc_attacks.py --data data/stanford_background --out work_dirs/posthoc_attacks
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence

import torch
from mmengine.config import Config

from mmseg_keyprotect.checkpoint import META_KEY, find_checkpoint
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models.points import PointSpec
from mmseg_keyprotect.reproduction import CONFIG_DIR, config_name

sys.path.insert(0, str(Path(__file__).resolve().parent))
from demo import (PROGRESS, data_options, protect_command, run_streaming, say,  # noqa: E402
                  test_command, test_options, threads_per_job, tool_env)

REPO = Path(__file__).resolve().parents[1]
BASELINE = f'{CONFIG_DIR}/{config_name("")}'
#: The attacks of the table (``scratch``: the thief's own training, for reference).
ATTACKS = ('scratch', 'finetune', 'head_only', 'adapter', 'sinkhorn', 'weight_matching')
#: Shares of the owner's 250 images the thief holds: 5 and 50 images, i.e. 1 % and 10 % of
#: the 500 training images.
FRACTIONS = (0.02, 0.2)
VICTIMS = ('posthoc', 'trained')


def split_ids(train_dir: Path) -> Dict[str, List[str]]:
    """The training ids (sorted) in two disjoint halves: alternate ids public and owner."""
    ids = sorted(p.stem for p in Path(train_dir).glob('*.jpg'))
    if len(ids) < 4:
        raise SystemExit(f'posthoc_attacks.py: error: {train_dir} holds {len(ids)} training '
                         'images; prepare the data with tools/prepare_stanford_background.py')
    return {'public': ids[0::2], 'owner': ids[1::2]}


def training_options(data: str, ann_file: Path) -> List[str]:
    """``--cfg-options``: every dataloader on ``data`` (validating on the selection split,
    testing on the test split, as the configs do), training on ``ann_file``'s ids."""
    return data_options(data) + [f'train_dataloader.dataset.ann_file={ann_file}']


def schedule_options(iterations: int, lr: float) -> List[str]:
    """``--cfg-options`` for ``iterations`` of SGD at ``lr`` (poly decay to the end),
    validating and keeping the best checkpoint every tenth of it."""
    every = max(1, iterations // 10)
    return [f'train_cfg.max_iters={iterations}', f'train_cfg.val_interval={every}',
            f'default_hooks.checkpoint.interval={every}', f'optim_wrapper.optimizer.lr={lr}',
            f'param_scheduler.1.end={iterations}']


def trained_victim_config(points: Sequence[str]) -> str:
    """The config of the victim trained under the key: the baseline with ``points``."""
    listed = ''.join(f'\n        {p!r},' for p in points)
    return (f"_base_ = ['{REPO / BASELINE}']\n"
            "model = dict(\n    type='KeyProtectedEncoderDecoder',\n"
            f"    protection=dict(key={{{{_base_.key}}}}, points=[{listed}\n    ]))\n")


def head_modules(points: Sequence[Any]) -> List[str]:
    """The modules that consume ``points`` (names or point dicts) on mmseg's FCN
    (``head_only`` retrains them)."""
    points = [PointSpec.parse(p).name() for p in points]
    consumers = {'backbone.layer3:output': ['backbone.layer4.0.conv1',
                                            'backbone.layer4.0.downsample.0'],
                 'backbone.layer4:output': ['decode_head.convs.0', 'decode_head.conv_cat'],
                 'decode_head.conv_seg:input': ['decode_head.conv_seg']}
    unknown = [p for p in points if p not in consumers]
    if unknown:
        raise SystemExit(f'posthoc_attacks.py: error: points {unknown}: no consumers listed '
                         'for them in head_modules()')
    return [m for p in points for m in consumers[p]]


def attack_config(name: str, victim_config: Path, stolen: Path, public: Path,
                  heads: Sequence[str]) -> str:
    """The attack config of victim ``name`` (every attack, both fractions, 100 iterations)."""
    return (f"_base_ = ['{REPO}/configs/attacks/_base_/demo_attacks.py']\nname = {name!r}\n"
            f"victim = dict(config='{victim_config}', checkpoint='{stolen}', "
            f"reference='{public}')\n"
            f'attacks = {list(ATTACKS)!r}\nfractions = {list(FRACTIONS)!r}\nbudgets = [100]\n'
            f'head_modules = {list(heads)!r}\n')


def export_in_clear(config: Path, checkpoint: str, key_file: Path, out: Path) -> None:
    """What the thief gets from a deployment that keeps the weights decrypted: the keyed
    model's own weights (loaded with the key), saved in clear with the checkpoint's public
    protection descriptor; never a permutation or other key-derived buffer."""
    from mmseg.registry import MODELS

    from mmseg_keyprotect.apis import checkpoint_protection, init_protected_model, load_config
    from mmseg_keyprotect.protection import Protection
    model = init_protected_model(str(config), checkpoint, key=str(key_file))
    plain_cfg, _ = Protection.from_config(load_config(str(config))).attacker_view()
    names = set(MODELS.build(plain_cfg.model).state_dict())
    state = {n: t.detach().clone() for n, t in model.state_dict().items() if n in names}
    missing = names - set(state)
    if missing:
        raise SystemExit(f'posthoc_attacks.py: error: {sorted(missing)[:3]}: not in the keyed '
                         'model')
    torch.save({'state_dict': state,
                'meta': {META_KEY: checkpoint_protection(checkpoint)}}, out)


def train(config: str, work_dir: Path, options: List[str], env: Mapping[str, str], tag: str,
          init: str = '') -> str:
    """mmseg's tools/train.py from ``init`` (a checkpoint to fine-tune, or from scratch), or
    resuming an interrupted run of ``work_dir``; the best checkpoint.

    (mmengine resumes *from* ``load_from`` when both are set, so a fine-tuning passes
    ``load_from`` only on its first start.)
    """
    if not (work_dir / 'done').is_file():
        work_dir.mkdir(parents=True, exist_ok=True)
        start = (['--resume'] if (work_dir / 'last_checkpoint').is_file() else
                 [] if not init else None)
        options = options + ([f'load_from={init}'] if start is None else [])
        say(f'{tag}training {config}')
        run_streaming([sys.executable, 'tools/train.py', config, '--work-dir', str(work_dir),
                       *(start or []), '--cfg-options', *options],
                      work_dir / 'train_stdout.log', PROGRESS, dict(env), tag)
        (work_dir / 'done').touch()
    return find_checkpoint(work_dir, 'best')


def test(config: str, checkpoint: str, work_dir: Path, options: List[str],
         env: Mapping[str, str], tag: str) -> Dict[str, Any]:
    """mmseg's tools/test.py under the key conditions; its report."""
    report = work_dir / 'key_conditions.json'
    if not report.is_file():
        say(f'{tag}testing {Path(checkpoint).name} under the key conditions')
        run_streaming(test_command(config, checkpoint, work_dir, options),
                      work_dir / 'test_stdout.log', PROGRESS, dict(env), tag)
    return json.loads(report.read_text())


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--data', default='data/stanford_background',
                        help='prepared dataset (tools/prepare_stanford_background.py)')
    parser.add_argument('--out', type=Path, default=Path('work_dirs/posthoc_attacks'))
    parser.add_argument('--public-iters', type=int, default=3000,
                        help='training of the public model (lr 0.05)')
    parser.add_argument('--finetune-iters', type=int, default=2000,
                        help="the owner's fine-tuning of each victim (lr 0.01)")
    parser.add_argument('--incorrect', type=int, default=20, help='incorrect keys per test')
    parser.add_argument('--budget', type=int, default=100, help='attack iterations')
    parser.add_argument('--threads', type=int, default=None)
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    data = Path(args.data)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    key_file = out / 'owner.key'
    if not key_file.exists():
        SecretKey.generate().save(key_file)
    env = tool_env(key_file, args.threads or threads_per_job(1, os.cpu_count() or 1),
                   'KP_KEY_FILE')
    lists = {}
    for half, ids in split_ids(data / 'img_dir' / 'train').items():
        lists[half] = out / f'{half}.txt'
        lists[half].write_text('\n'.join(ids) + '\n')
    test_opts = test_options(args.data) + [f'test_cfg.incorrect={args.incorrect}']

    public = train(BASELINE, out / 'public', training_options(args.data, lists['public'])
                   + schedule_options(args.public_iters, 0.05), env, '[public] ')
    test(BASELINE, public, out / 'public', test_opts, env, '[public] ')
    owner = training_options(args.data, lists['owner'])
    finetune = owner + schedule_options(args.finetune_iters, 0.01)

    plain = train(BASELINE, out / 'finetuned', finetune, env, '[finetuned] ', init=public)
    victims = {'posthoc': (out / 'posthoc' / 'protected_config.py',
                           str(out / 'posthoc' / 'protected.pth'))}
    if not Path(victims['posthoc'][1]).is_file():
        run_streaming(protect_command(BASELINE, plain, str(key_file), out / 'posthoc'),
                      out / 'protect_stdout.log', PROGRESS, env, '[posthoc] ')
    points = list(Config.fromfile(str(victims['posthoc'][0])).model.protection.points)
    trained_cfg = out / 'trained_config.py'
    trained_cfg.write_text(trained_victim_config(points))
    victims['trained'] = (trained_cfg, train(str(trained_cfg), out / 'trained', finetune, env,
                                             '[trained] ', init=public))
    references = []
    for name, (config, checkpoint) in victims.items():
        test(str(config), checkpoint, out / name, test_opts, env, f'[{name}] ')
        references.append(f'{name}={out / name / "key_conditions.json"}')
        stolen = out / name / 'stolen_in_clear.pth'
        if not stolen.is_file():
            export_in_clear(config, checkpoint, key_file, stolen)
        (out / f'attack_{name}.py').write_text(
            attack_config(name, config, stolen, Path(public), head_modules(points)))

    attack_opts = (training_options(args.data, lists['owner'])
                   + ['val_dataloader.dataset.data_prefix.img_path=img_dir/test',
                      'val_dataloader.dataset.data_prefix.seg_map_path=ann_dir/test'])
    results = out / 'results.jsonl'
    for name in VICTIMS:
        run_streaming([sys.executable, 'tools/attack.py', 'run', str(out / f'attack_{name}.py'),
                       '--out', str(results), '--work-dir', str(out / 'attacks'),
                       '--budgets', str(args.budget), '--cfg-options', *attack_opts],
                      out / f'attack_{name}.log', PROGRESS, env, f'[attack {name}] ')
    public_row = json.loads((out / 'public' / 'key_conditions.json').read_text())
    baseline = public_row['summary']['correct']['mIoU']
    run_streaming([sys.executable, 'tools/attack.py', 'report', str(results), '--budget',
                   str(args.budget), '--reference', *references, '--out', str(out / 'report')],
                  out / 'report.log', PROGRESS, env)
    say((out / 'report.md').read_text())
    say(f'the public model alone (no theft): {baseline:.2f} mIoU on the test split')


if __name__ == '__main__':
    main()
