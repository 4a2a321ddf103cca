"""Attack a protected model the way a thief with a few labelled images would.

Subcommands (results in docs/security.md):

  key-search   try the keys of seeds 0..N-1 on a few labelled images
               (a model protected with a paper-style ``key=dict(seed=...)``)
  run          train attacks on a stolen checkpoint without its key, as an
               attack config says (configs/attacks/): fine-tuning, head-only
               retraining, identity-initialised adapters at the protected
               points, Sinkhorn permutation recovery, and training from
               scratch with the same data and budget for reference; with
               ``--inits momentum`` the attacks start from the SGD momentum
               buffers of the last ``iter_*.pth`` instead of the weights
  report       tables (markdown) and a plot from ``run``'s JSON lines
  audit        owner only: the largest |Spearman r| of every tensor of every
               .pth of a work_dir against the run's weights and momentum

Examples:
  python tools/attack.py key-search configs/demo/fcn_r18-d8_perm-m6-seedkey_demo.py \\
      work_dirs/demo/fcn_r18-d8_perm-m6-seedkey_demo/best_mIoU_iter_1200.pth --seeds 10000
  python tools/attack.py run configs/attacks/demo/perm-m6.py --out work_dirs/attacks/results.jsonl
  python tools/attack.py report work_dirs/attacks/results.jsonl --plot docs/images/attacks.png
  python tools/attack.py audit configs/demo/fcn_r18-d8_perm-m1to6-encw_demo.py \
      work_dirs/demo/fcn_r18-d8_perm-m1to6-encw_demo/iter_1200.pth \
      work_dirs/demo/fcn_r18-d8_perm-m1to6-encw_demo
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Dict, List, Optional

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

import mmseg_keyprotect  # noqa: F401
from mmseg_keyprotect.attacks import (attack_report, attack_specs, correlation_audit,
                                      few_images_loader, load_stolen_model, owner_reference,
                                      plot, read_references, read_results, run_suite,
                                      search_seed_keys, write_attack_report)
from mmseg_keyprotect.protection import Protection

KEY_BITS = 256


def _load_victim(path: str, options: Optional[dict]) -> Config:
    cfg = Config.fromfile(path)
    if options:
        cfg.merge_from_dict(options)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    return cfg


def _has_pipeline_cipher(cfg: Config) -> bool:
    return bool(Protection.from_config(cfg).pipeline_steps('test_dataloader'))


def cmd_key_search(args: argparse.Namespace) -> Dict[str, Any]:
    """Search seed keys; print and return the result."""
    victim = _load_victim(args.config, args.cfg_options)
    model, cfg = load_stolen_model(victim, args.checkpoint)
    loader = few_images_loader(cfg, args.images, args.seed)
    result = search_seed_keys(model, loader, range(args.seeds),
                              reload_data=_has_pipeline_cipher(cfg))
    years = 2**KEY_BITS / 2 / result.keys_per_second / (3600 * 24 * 365)
    report = dict(
        config=args.config, images=args.images, seeds_tried=len(result.scores),
        best_seed=result.best_seed, best_pixel_acc=round(result.best_score, 4),
        runner_up_pixel_acc=round(result.runner_up(), 4),
        keys_per_second=round(result.keys_per_second, 1), seconds=round(result.seconds, 1),
        expected_years_for_256_bit_key=f'{years:.1e}')
    if args.true_seed is not None:  # the owner's check, never used by the search
        report['recovered'] = result.best_seed == args.true_seed
    print(json.dumps(report, indent=2))
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(report, indent=2) + '\n')
    return report


def cmd_run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Run every attack of an attack config; append one JSON line per attack to ``--out``."""
    attack_cfg = Config.fromfile(args.attack_config)
    victim = _load_victim(attack_cfg.victim['config'], args.cfg_options)
    specs = attack_specs(attack_cfg, args.kinds, args.fractions, args.budgets, args.inits)
    return run_suite(attack_cfg, victim, attack_cfg.get('name', Path(args.attack_config).stem),
                     specs, Path(args.out), args.work_dir, args.score_recovery)


def cmd_report(args: argparse.Namespace) -> str:
    """Print the markdown tables; optionally write them (and the rows) and a plot."""
    rows = read_results(args.results)
    refs = read_references(args.reference)
    text = attack_report(rows, args.budget, refs, args.baseline)
    print(text)
    if args.out:
        out = Path(args.out)
        write_attack_report(str(out.parent), out.stem, rows, args.budget, refs, args.baseline)
    if args.plot:
        plot(rows, args.budget, refs, args.plot)
    return text


def cmd_audit(args: argparse.Namespace) -> Dict[str, Any]:
    """Owner's check: the largest |Spearman r| of any tensor of any .pth against the clear run."""
    reference = owner_reference(args.config, args.checkpoint)
    rows = correlation_audit(args.work_dir, reference, args.min_size)
    worst = max(rows, key=lambda r: r['abs_r']) if rows else None
    summary = dict(files=len({r['file'] for r in rows}), tensors=len(rows),
                   max_abs_r=worst['abs_r'] if worst else None, worst=worst)
    print(json.dumps(summary, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(dict(summary, rows=rows), indent=1))
    return summary


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest='command', required=True)
    search = sub.add_parser('key-search', help='search the keys of integer seeds')
    search.add_argument('config')
    search.add_argument('checkpoint')
    search.add_argument('--seeds', type=int, default=10000, help='try seeds 0..N-1')
    search.add_argument('--images', type=int, default=4, help='labelled images held')
    search.add_argument('--seed', type=int, default=0, help='which images (subset seed)')
    search.add_argument('--true-seed', type=int, default=None,
                        help='owner only: report whether the search found this seed')
    search.add_argument('--out', help='write the result as JSON')
    search.add_argument('--cfg-options', nargs='+', action=DictAction)
    run = sub.add_parser('run', help='run the attacks of an attack config')
    run.add_argument('attack_config')
    run.add_argument('--out', default='work_dirs/attacks/results.jsonl')
    run.add_argument('--work-dir', default='work_dirs/attacks')
    run.add_argument('--kinds', nargs='+', help='override the config: attacks to run')
    run.add_argument('--fractions', nargs='+', type=float)
    run.add_argument('--budgets', nargs='+', type=int)
    run.add_argument('--inits', nargs='+', choices=['checkpoint', 'momentum'],
                     help='where attacked weights start: the stolen weights, or the momentum '
                          'buffers of the last iter_*.pth (default: the config\'s inits)')
    run.add_argument('--score-recovery', action='store_true',
                     help="owner only: score Sinkhorn's recovered permutation with the key")
    run.add_argument('--cfg-options', nargs='+', action=DictAction,
                     help='override the victim config, e.g. data roots')
    audit = sub.add_parser('audit', help="owner only: |Spearman r| of every tensor of every "
                           ".pth of a work_dir against the run's weights and optimizer state")
    audit.add_argument('config')
    audit.add_argument('checkpoint', help='an iter_*.pth of the run (opened with the key)')
    audit.add_argument('work_dir')
    audit.add_argument('--min-size', type=int, default=1024,
                       help='skip tensors with fewer values (default: %(default)s)')
    audit.add_argument('--out', help='write every row as JSON')
    report = sub.add_parser('report', help='markdown tables and a plot from run results')
    report.add_argument('results', nargs='+')
    report.add_argument('--budget', type=int, default=100)
    report.add_argument('--reference', nargs='*',
                        help='NAME=work_dir/key_conditions.json for correct/plain columns')
    report.add_argument('--baseline', type=float, help='unprotected mIoU, for plain / baseline')
    report.add_argument('--plot')
    report.add_argument('--out', help='also write OUT.md (tables) and OUT.json (rows)')
    return parser.parse_args(argv)


def main(argv=None) -> Any:
    args = parse_args(argv)
    return {'key-search': cmd_key_search, 'run': cmd_run, 'report': cmd_report,
            'audit': cmd_audit}[
        args.command](args)


if __name__ == '__main__':
    main()
