"""The demo behind `make demo`: protection working end to end on a CPU.

1. writes the synthetic dataset (tools/make_dataset.py: train, val and a disjoint test split)
   and an owner key (tools/keygen.py);
2. trains, with mmseg's own tools/train.py, an unprotected baseline, a block-cipher model and
   the protection we recommend (docs/security.md): a feature-permutation model whose weights
   are also encrypted with the key (configs/demo/); the best checkpoint is selected on the
   val split; then protects the trained baseline after training (tools/protect.py: keyed
   permutations absorbed into its weights, sealed; no training, seconds);
3. evaluates each with mmseg's own tools/test.py on the *test* split under the key conditions
   (correct, plain, 100 incorrect keys), with mmseg's pooled mIoU and paper 2's per-image
   mIoU, and prints one table;
4. draws, for each protected model, the same images under correct / plain / incorrect key.

The three models run at once (``--jobs``, default: one per model), each process with
``cores // jobs`` torch threads (at least one), so every core is used.

Everything lands in work_dirs/demo/ (results.md, results.json, conditions_*.png).
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Optional

from mmseg_keyprotect.checkpoint import find_checkpoint
from mmseg_keyprotect.evaluation import models_table, write_report

REPO = Path(__file__).resolve().parents[1]
MODELS = [
    ('baseline', 'configs/demo/fcn_r18-d8_baseline_demo.py'),
    ('block cipher (SHF, M=2)', 'configs/demo/fcn_r18-d8_shf-b2_demo.py'),
    ('recommended: permutation (Model-1..6) + encrypted weights',
     'configs/demo/fcn_r18-d8_perm-m1to6-encw_demo.py'),
]
#: The fourth row: the trained baseline, protected after training (tools/protect.py).
POSTHOC = 'baseline, protected after training'
# Progress shown while training: every 100th iteration and each validation result.
PROGRESS = re.compile(r'Iter\(train\) \[\s*\d*00/|Iter\(val\) \[(\d+)/\1\]')
LOG_PREFIX = re.compile(r'^\d\d/\d\d \d\d:\d\d:\d\d - mmengine - \w+ - ')
_PRINT = threading.Lock()


def say(text: str) -> None:
    """Print one line (whole, even when several models run at once)."""
    with _PRINT:
        print(text, flush=True)


def run_streaming(cmd: List[str], log_file: Path, show: re.Pattern, env: Dict[str, str],
                  tag: str = '') -> float:
    """Run ``cmd``, keep its full output in ``log_file`` and echo the progress lines.

    Returns:
        float: CPU seconds (user + system) of the command and the children it reaped
        (dataloader workers), independent of what else the machine runs.
    """
    with open(log_file, 'w') as log, subprocess.Popen(
            cmd, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
            text=True) as proc:
        for line in proc.stdout:
            log.write(line)
            if show.search(line):
                text = LOG_PREFIX.sub('', line.rstrip())
                say(f'    {tag}' + re.sub(r'\s+', ' ', text)[:160])
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
        if proc.returncode != 0:
            raise SystemExit(f'command failed ({proc.returncode}); see {log_file}:\n'
                             + ' '.join(cmd))
    return usage.ru_utime + usage.ru_stime


def tool_env(key_file: Path, threads: int = 1,
             variable: str = 'KP_DEMO_KEY_FILE') -> Dict[str, str]:
    """Environment of the tools the demo (and ``tools/reproduce.py``) runs.

    ``threads`` torch (OpenMP) threads per process (``--threads``, replacing an
    ``OMP_NUM_THREADS`` of the caller's environment); the environment variable
    ``variable`` is where the configs read the owner key file (``KP_DEMO_KEY_FILE``
    for configs/demo/, ``KP_KEY_FILE`` for the others).
    """
    return {**os.environ, 'OMP_NUM_THREADS': str(threads), 'PYTHONWARNINGS': 'ignore',
            variable: str(key_file)}


def protect_command(config: str, checkpoint: str, key_file: str, out: Path) -> List[str]:
    """tools/protect.py protecting a trained ``checkpoint`` (``points='auto'``, sealed
    weights), writing ``out/protected_config.py`` and ``out/protected.pth``; no test."""
    return [sys.executable, 'tools/protect.py', str(config), str(checkpoint), '--key',
            str(key_file), '--out', str(out), '--no-eval']


def test_command(config: str, checkpoint: str, work_dir: Path, options: List[str]) -> List[str]:
    """mmseg's tools/test.py (through the plugin's wrapper) with ``--cfg-options``."""
    return [sys.executable, 'tools/test.py', str(config), str(checkpoint), '--work-dir',
            str(work_dir), '--cfg-options', *options]


def data_options(data_root: str) -> List[str]:
    """``--cfg-options`` pointing every dataloader (train, val, test) at ``data_root``."""
    return [f'{split}.dataset.data_root={data_root}'
            for split in ('train_dataloader', 'val_dataloader', 'test_dataloader')]


def test_options(data_root: str) -> List[str]:
    """``--cfg-options`` of the demo's tests: where the data is (the configs test on the
    test split, disjoint from the val split that selects the checkpoint)."""
    return [f'test_dataloader.dataset.data_root={data_root}']


def threads_per_job(jobs: int, cores: int) -> int:
    """Torch threads per process so that ``jobs`` processes share ``cores``."""
    return max(1, cores // max(1, jobs))


def slug(config: str) -> str:
    return Path(config).stem


def short_schedule(max_iters: Optional[int]) -> List[str]:
    """``--cfg-options`` that shorten training to ``max_iters`` (none if not given)."""
    if not max_iters:
        return []
    return [f'train_cfg.max_iters={max_iters}', f'train_cfg.val_interval={max_iters}',
            f'default_hooks.checkpoint.interval={max_iters}']


def train_and_test(name: str, config: str, out: Path, args: argparse.Namespace,
                   threads: int = 1) -> Dict:
    env = tool_env(out / 'owner.key', threads)
    tag = f'[{slug(config).replace("fcn_r18-d8_", "").replace("_demo", "")}] '
    work_dir = out / slug(config)
    work_dir.mkdir(parents=True, exist_ok=True)
    options = data_options(args.data_root)
    options.append(f'randomness.seed={args.seed}')
    options += short_schedule(args.max_iters)
    say(f'\n[{name}] training {config} ({threads} thread(s))')
    start = time.time()
    run_streaming([sys.executable, 'tools/train.py', config, '--work-dir', str(work_dir),
                   '--cfg-options', *options], work_dir / 'train_stdout.log', PROGRESS, env, tag)
    checkpoint = Path(find_checkpoint(work_dir, 'best'))
    say(f'[{name}] trained in {time.time() - start:.0f} s; testing {checkpoint.name} '
        f'(selected on val) on the test split under key conditions')
    report = test_key_conditions(name, config, checkpoint, work_dir, args, env, tag)
    if report['protection'] and not args.no_figure:
        figure = out / f'conditions_{slug(config)}.png'
        subprocess.run([sys.executable, 'tools/visualize_conditions.py', config,
                        str(checkpoint), '--out', str(figure), '--cfg-options',
                        *test_options(args.data_root)],
                       cwd=REPO, check=True, capture_output=True, env=env)
        say(f'[{name}] figure: {figure}')
    say(f'[{name}] done in {time.time() - start:.0f} s')
    return report['summary']


def test_key_conditions(name: str, config: str, checkpoint: Path, work_dir: Path,
                        args: argparse.Namespace, env: Dict[str, str], tag: str) -> Dict:
    """mmseg's tools/test.py on the test split under key conditions; the summary."""
    test_opts = test_options(args.data_root) + [f'test_cfg.incorrect={args.incorrect}']
    run_streaming(test_command(config, str(checkpoint), work_dir, test_opts),
                  work_dir / 'test_stdout.log', re.compile(r'^\|'), env, tag)
    return json.loads((work_dir / 'key_conditions.json').read_text())  # KeyConditionTestLoop's


def protect_after_training(baseline: str, out: Path, args: argparse.Namespace,
                           threads: int = 1) -> Dict:
    """Protect the trained baseline with tools/protect.py (no training), then test it."""
    env = tool_env(out / 'owner.key', threads)
    checkpoint = Path(find_checkpoint(out / slug(baseline), 'best'))
    work_dir = out / f'{slug(baseline)}_protected'
    say(f'\n[{POSTHOC}] protecting {checkpoint.name} with tools/protect.py (points=auto, '
        'weights sealed)')
    start = time.time()
    run_streaming(protect_command(baseline, str(checkpoint), str(out / 'owner.key'), work_dir),
                  work_dir.with_suffix('.log'), re.compile(r'^(protected|wrote)'), env,
                  '[protect] ')
    say(f'[{POSTHOC}] protected in {time.time() - start:.0f} s; testing under key conditions')
    report = test_key_conditions(POSTHOC, str(work_dir / 'protected_config.py'),
                                 work_dir / 'protected.pth', work_dir, args, env, '[protected] ')
    return report['summary']


def machine() -> Dict:
    """Where and when the demo ran (for the README's numbers)."""
    processor = platform.processor() or platform.machine()
    cpuinfo = Path('/proc/cpuinfo')
    if cpuinfo.is_file():
        names = re.findall(r'^model name\s*:\s*(.+)$', cpuinfo.read_text(), re.M)
        processor = names[0] if names else processor
    return {'date': datetime.datetime.now(datetime.timezone.utc).strftime('%Y-%m-%d %H:%M UTC'),
            'cpu_count': os.cpu_count(), 'processor': processor,
            'python': platform.python_version()}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('--out', default='work_dirs/demo')
    parser.add_argument('--data-root', default='data/synthetic_voc')
    parser.add_argument('--incorrect', type=int, default=100, help='incorrect keys to test')
    parser.add_argument('--max-iters', type=int, default=None,
                        help='override the training length (for a quick check)')
    parser.add_argument('--no-figure', action='store_true')
    parser.add_argument('--num-train', type=int, default=400, help='synthetic training images')
    parser.add_argument('--num-val', type=int, default=100,
                        help='synthetic validation images (checkpoint selection)')
    parser.add_argument('--num-test', type=int, default=100,
                        help='synthetic test images (the reported numbers)')
    parser.add_argument('--seed', type=int, default=0, help='training seed (randomness.seed)')
    parser.add_argument('--jobs', type=int, default=len(MODELS),
                        help='models trained at once (default: %(default)s)')
    parser.add_argument('--threads', type=int, default=None,
                        help='torch threads per process (default: cores // jobs, at least 1)')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    out = REPO / args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.time()
    info = machine()
    info['load_average_start'] = os.getloadavg()
    say('[data] writing the synthetic dataset')
    subprocess.run([sys.executable, 'tools/make_dataset.py', '--out', args.data_root,
                    '--num-train', str(args.num_train), '--num-val', str(args.num_val),
                    '--num-test', str(args.num_test)], cwd=REPO, check=True)
    key_file = out / 'owner.key'
    if not key_file.exists():
        subprocess.run([sys.executable, 'tools/keygen.py', str(key_file)], cwd=REPO, check=True)
    jobs = max(1, min(args.jobs, len(MODELS)))
    threads = args.threads or threads_per_job(jobs, os.cpu_count() or 1)
    with ThreadPoolExecutor(max_workers=jobs) as pool:
        futures = {name: pool.submit(train_and_test, name, config, out, args, threads)
                   for name, config in MODELS}
        results = {name: future.result() for name, future in futures.items()}
    results[POSTHOC] = protect_after_training(MODELS[0][1], out, args,
                                              threads_per_job(1, os.cpu_count() or 1))
    elapsed = time.time() - start
    info.update(load_average_end=os.getloadavg(), seconds=round(elapsed), jobs=jobs,
                threads_per_job=threads, seed=args.seed)
    table = models_table(results)
    write_report(out, 'results', {'run': info, 'models': results}, table)
    say(f'\nDemo results (synthetic dataset, test split, seed {args.seed}, {elapsed:.0f} s in '
        f'all on {info["cpu_count"]} cores, {jobs} jobs x {threads} thread(s); load average '
        f'{info["load_average_end"][0]:.2f}):\n')
    say(table)
    say(f'\nwritten: {out / "results.md"}, {out / "results.json"}, {out}/conditions_*.png')


if __name__ == '__main__':
    main()
