"""The demo behind `make demo`: protection working end to end on a CPU.

1. writes the synthetic dataset (tools/make_dataset.py) and an owner key (tools/keygen.py);
2. trains, with mmseg's own tools/train.py, an unprotected baseline, a block-cipher model and
   the protection we recommend (docs/security.md): a feature-permutation model whose weights
   are also encrypted with the key (configs/demo/);
3. evaluates each with mmseg's own tools/test.py under the key conditions (correct, plain,
   100 incorrect keys) and prints one table;
4. draws, for each protected model, the same images under correct / plain / incorrect key.

Everything lands in work_dirs/demo/ (results.md, results.json, conditions_*.png).
"""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List

REPO = Path(__file__).resolve().parents[1]
MODELS = [
    ('baseline', 'configs/demo/fcn_r18-d8_baseline_demo.py'),
    ('block cipher (SHF, M=2)', 'configs/demo/fcn_r18-d8_shf-b2_demo.py'),
    ('recommended: permutation (Model-1..6) + encrypted weights',
     'configs/demo/fcn_r18-d8_perm-m1to6-encw_demo.py'),
]
# Progress shown while training: every 100th iteration and each validation result.
PROGRESS = re.compile(r'Iter\(train\) \[\s*\d*00/|Iter\(val\) \[(\d+)/\1\]')
LOG_PREFIX = re.compile(r'^\d\d/\d\d \d\d:\d\d:\d\d - mmengine - \w+ - ')


def run_streaming(cmd: List[str], log_file: Path, show: re.Pattern, env: Dict[str, str]) -> None:
    """Run ``cmd``, keep its full output in ``log_file`` and echo the progress lines."""
    with open(log_file, 'w') as log, subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True) as proc:
        for line in proc.stdout:
            log.write(line)
            if show.search(line):
                text = LOG_PREFIX.sub('', line.rstrip())
                print('    ' + re.sub(r'\s+', ' ', text)[:160], flush=True)
        if proc.wait() != 0:
            raise SystemExit(f'command failed ({proc.returncode}); see {log_file}:\n'
                             + ' '.join(cmd))


def demo_env(key_file: Path) -> Dict[str, str]:
    """Environment of the demo's subprocesses.

    One torch thread per process (on 2 cores, 2 threads plus a dataloader worker
    thrash); ``KP_DEMO_KEY_FILE`` is where the demo configs read the owner key.
    """
    return {'OMP_NUM_THREADS': '1', **os.environ, 'PYTHONWARNINGS': 'ignore',
            'KP_DEMO_KEY_FILE': str(key_file)}


def best_checkpoint(work_dir: Path) -> Path:
    best = sorted(work_dir.glob('best_mIoU_iter_*.pth'))
    if not best:
        raise SystemExit(f'no best checkpoint in {work_dir}')
    return best[-1]


def slug(config: str) -> str:
    return Path(config).stem


def train_and_test(name: str, config: str, out: Path, args: argparse.Namespace) -> Dict:
    env = demo_env(out / 'owner.key')
    work_dir = out / slug(config)
    work_dir.mkdir(parents=True, exist_ok=True)
    options = [f'{split}.dataset.data_root={args.data_root}'
               for split in ('train_dataloader', 'val_dataloader', 'test_dataloader')]
    if args.max_iters:
        options += [f'train_cfg.max_iters={args.max_iters}',
                    f'train_cfg.val_interval={args.max_iters}',
                    f'default_hooks.checkpoint.interval={args.max_iters}']
    print(f'\n[{name}] training {config}', flush=True)
    start = time.time()
    run_streaming([sys.executable, 'tools/train.py', config, '--work-dir', str(work_dir),
                   '--cfg-options', *options], work_dir / 'train_stdout.log', PROGRESS, env)
    checkpoint = best_checkpoint(work_dir)
    print(f'[{name}] trained in {time.time() - start:.0f} s; testing {checkpoint.name} '
          'under key conditions', flush=True)
    test_options = [f'test_dataloader.dataset.data_root={args.data_root}',
                    'test_cfg.type=KeyConditionTestLoop', f'test_cfg.incorrect={args.incorrect}']
    run_streaming([sys.executable, 'tools/test.py', config, str(checkpoint), '--work-dir',
                   str(work_dir), '--cfg-options', *test_options],
                  work_dir / 'test_stdout.log', re.compile(r'^\|'), env)
    report = json.loads((work_dir / 'key_conditions.json').read_text())
    if report['protection'] and not args.no_figure:
        figure = out / f'conditions_{slug(config)}.png'
        subprocess.run([sys.executable, 'tools/visualize_conditions.py', config,
                        str(checkpoint), '--out', str(figure), '--cfg-options',
                        f'test_dataloader.dataset.data_root={args.data_root}'],
                       cwd=REPO, check=True, capture_output=True, env=env)
        print(f'[{name}] figure: {figure}', flush=True)
    return report['summary']


def results_table(results: Dict[str, Dict]) -> str:
    lines = ['| model | correct mIoU | plain mIoU | incorrect mIoU (mean ± std [min, max]) |',
             '|---|---:|---:|---:|']
    for name, summary in results.items():
        correct = summary['correct']['mIoU']
        if 'incorrect' not in summary:  # unprotected: every condition is the same model
            lines.append(f'| {name} | {correct:.2f} | {correct:.2f} (same model) | - |')
            continue
        inc = summary['incorrect']
        lines.append(
            f"| {name} | {correct:.2f} | {summary['plain']['mIoU']:.2f} | "
            f"{inc['mean']['mIoU']:.2f} ± {inc['std']['mIoU']:.2f} "
            f"[{inc['min']['mIoU']:.2f}, {inc['max']['mIoU']:.2f}] ({inc['num_keys']} keys) |")
    return '\n'.join(lines)


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic_voc')
    parser.add_argument('--incorrect', type=int, default=100, help='incorrect keys to test')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='override the training length (for a quick check)')
    parser.add_argument('--no-figure', action='store_true')
    parser.add_argument('--num-train', type=int, default=400, help='synthetic training images')
    parser.add_argument('--num-val', type=int, default=100, help='synthetic validation images')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    print('[data] writing the synthetic dataset', flush=True)
    subprocess.run([sys.executable, 'tools/make_dataset.py', '--out', args.data_root,
                    '--num-train', str(args.num_train), '--num-val', str(args.num_val)],
                   cwd=REPO, check=True)
    key_file = out / 'owner.key'
    if not key_file.exists():
        subprocess.run([sys.executable, 'tools/keygen.py', str(key_file)], cwd=REPO, check=True)
    results = {name: train_and_test(name, config, out, args) for name, config in MODELS}
    table = results_table(results)
    (out / 'results.md').write_text(table + '\n')
    (out / 'results.json').write_text(json.dumps(results, indent=2))
    print(f'\nDemo results (synthetic dataset, {time.time() - start:.0f} s in all):\n')
    print(table)
    print(f'\nwritten: {out / "results.md"}, {out / "results.json"}, {out}/conditions_*.png')


if __name__ == '__main__':
    main()
