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
import glob
import json
import math
import os
from pathlib import Path
from typing import Any, Dict, List, Optional

from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

import mmseg_keyprotect  # noqa: F401
from mmseg_keyprotect.attacks import AttackSpec, correlation_audit, run_attack, true_permutations
from mmseg_keyprotect.attacks.key_search import (few_images_loader, load_stolen_model,
                                                 search_seed_keys)
from mmseg_keyprotect.attacks.stolen_files import owner_reference
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


def _checkpoint(victim_cfg: Dict[str, Any], init: str = 'checkpoint') -> str:
    """The stolen file: the best checkpoint, or for ``init='momentum'`` the last ``iter_*.pth``."""
    field, pattern = ('checkpoint', 'best_mIoU_iter_*.pth') if init == 'checkpoint' else \
        ('iter_checkpoint', 'iter_*.pth')
    if victim_cfg.get(field):
        return victim_cfg[field]
    found = sorted(glob.glob(os.path.join(victim_cfg['work_dir'], pattern)),
                   key=lambda p: int(''.join(filter(str.isdigit, os.path.basename(p))) or 0))
    if not found:
        raise SystemExit(f"no {pattern} in {victim_cfg['work_dir']}: train the "
                         f"victim first (tools/train.py {victim_cfg['config']})")
    return found[-1]


def _specs(attack_cfg: Config, args: argparse.Namespace) -> List[AttackSpec]:
    kinds = args.kinds or attack_cfg.attacks
    fractions = args.fractions or attack_cfg.fractions
    budgets = args.budgets or attack_cfg.budgets
    inits = args.inits or attack_cfg.get('inits', ['checkpoint'])
    specs = []
    # scratch starts from nothing stolen: one run, whatever the inits
    pairs = [(k, i) for k in kinds for i in (inits if k != 'scratch' else ['checkpoint'])]
    for kind, init in pairs:
        for fraction in fractions:
            for budget in budgets:
                scheduler = attack_cfg.param_schedulers.get(kind)
                if scheduler is not None:
                    scheduler = [dict(s, end=s.get('end', budget)) for s in scheduler]
                specs.append(AttackSpec(
                    kind=kind, fraction=fraction, budget=budget,
                    optim_wrapper=attack_cfg.optim_wrappers[kind].to_dict(),
                    param_scheduler=scheduler,
                    head_modules=list(attack_cfg.get('head_modules', [])),
                    sinkhorn=dict(attack_cfg.get('sinkhorn', {})), seed=attack_cfg.seed,
                    init=init))
    return specs


def _done(out: Path) -> set:
    if not out.exists():
        return set()
    return {(r['victim'], r['kind'], r.get('init', 'checkpoint'), r['fraction'], r['budget'],
             r['seed']) for r in map(json.loads, out.read_text().splitlines()) if r}


def cmd_run(args: argparse.Namespace) -> List[Dict[str, Any]]:
    """Run every attack of an attack config; append one JSON line per attack to ``--out``."""
    attack_cfg = Config.fromfile(args.attack_config)
    victim = _load_victim(attack_cfg.victim['config'], args.cfg_options)
    name = attack_cfg.get('name', Path(args.attack_config).stem)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = _done(out)
    truth = true_permutations(victim) if args.score_recovery else None
    results = []
    for spec in _specs(attack_cfg, args):
        # Training from scratch does not use the stolen model: one run serves every victim
        # of the same architecture and data.
        victim_name = 'scratch' if spec.kind == 'scratch' else name
        ident = (victim_name, spec.kind, spec.init, spec.fraction, spec.budget, spec.seed)
        if ident in done:
            continue
        work_dir = str(Path(args.work_dir) / victim_name / spec.slug)
        checkpoint = None if spec.kind == 'scratch' else _checkpoint(attack_cfg.victim, spec.init)
        result = dict(victim=victim_name,
                      **run_attack(victim, checkpoint, spec, work_dir, truth))
        done.add(ident)
        print(json.dumps(result), flush=True)
        with out.open('a') as f:
            f.write(json.dumps(result) + '\n')
        results.append(result)
    return results


# ------------------------------------------------------------------------------ report
def _read(paths: List[str]) -> List[Dict[str, Any]]:
    """Result rows; attacks started from momentum buffers report as a victim of their own."""
    rows = []
    for path in paths:
        rows += [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    for row in rows:
        if row.get('init', 'checkpoint') != 'checkpoint' and row['kind'] != 'scratch':
            row['victim'] = f"{row['victim']} ({row['init']} init)"
    return rows


def report_table(rows: List[Dict[str, Any]], budget: int,
                 references: Dict[str, Dict[str, float]]) -> str:
    """Markdown: one row per (victim, fraction), one column per attack, at ``budget``."""
    kinds = ['finetune', 'head_only', 'adapter', 'sinkhorn']
    header = ['victim', 'attacker data', 'correct key', 'plain'] + kinds + \
        ['scratch', 'best attack - scratch']
    lines = ['| ' + ' | '.join(header) + ' |', '|' + '---|' * 2 + '---:|' * (len(header) - 2)]
    victims = _victims(rows, references)
    scratch = {(r['fraction'], r['budget']): r['mIoU'] for r in rows if r['kind'] == 'scratch'}
    for victim in victims:
        for fraction in sorted({r['fraction'] for r in rows if r['victim'] == victim}):
            by_kind = {r['kind']: r for r in rows
                       if r['victim'] == victim and r['fraction'] == fraction
                       and r['budget'] == budget}
            if not by_kind:
                continue
            images = next(iter(by_kind.values()))['train_images']
            ref = references.get(victim, {})
            cells = [victim, f'{fraction:.0%} ({images} images)',
                     _fmt(ref.get('correct')), _fmt(ref.get('plain'))]
            for kind in kinds:
                row = by_kind.get(kind)
                cell = _fmt(row['mIoU']) if row else '-'
                if row and row.get('recovered'):
                    share = sum(row['recovered'].values()) / len(row['recovered'])
                    cell += f' ({share:.0%} ch.)'
                cells.append(cell)
            base = scratch.get((fraction, budget))
            best = max((by_kind[k]['mIoU'] for k in kinds if k in by_kind), default=None)
            cells += [_fmt(base), _fmt(best - base) if None not in (best, base) else '-']
            lines.append('| ' + ' | '.join(cells) + ' |')
    return '\n'.join(lines)


def _victims(rows: List[Dict[str, Any]], references: Dict[str, Any]) -> List[str]:
    """Attacked victims: in the order of ``references``, then in the order of ``rows``."""
    attacked = list(dict.fromkeys(r['victim'] for r in rows if r['kind'] != 'scratch'))
    return [v for v in references if v in attacked] + \
        [v for v in attacked if v not in references]


def budget_table(rows: List[Dict[str, Any]]) -> str:
    """Markdown: fine-tuning vs scratch mIoU per budget and data fraction."""
    keys = sorted({(r['fraction'], r['budget']) for r in rows
                   if r['kind'] in ('finetune', 'scratch')})
    budgets = {}
    for r in rows:
        if r['kind'] == 'finetune':
            budgets.setdefault(r['victim'], set()).add(r['budget'])
    victims = [v for v, seen in budgets.items() if len(seen) > 1]  # victims with a sweep
    lines = ['| attacker data | budget (iterations) | scratch | ' +
             ' | '.join(f'fine-tune {v}' for v in victims) + ' |',
             '|---|---:|---:|' + '---:|' * len(victims)]
    for fraction, budget in keys:
        def get(kind, victim=None):
            for r in rows:
                if (r['kind'], r['fraction'], r['budget']) == (kind, fraction, budget) and \
                        (victim is None or r['victim'] == victim):
                    return _fmt(r['mIoU'])
            return '-'
        lines.append(f'| {fraction:.0%} | {budget} | {get("scratch")} | ' +
                     ' | '.join(get('finetune', v) for v in victims) + ' |')
    return '\n'.join(lines)


def _fmt(value: Optional[float]) -> str:
    return '-' if value is None or (isinstance(value, float) and math.isnan(value)) \
        else f'{value:.2f}'


def plot(rows: List[Dict[str, Any]], budget: int, references: Dict[str, Dict[str, float]],
         out: str) -> None:
    """Bar chart: mIoU per attack and victim at 10% of the data, scratch and correct key."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    kinds = ['finetune', 'head_only', 'adapter', 'sinkhorn']
    fractions = sorted({r['fraction'] for r in rows})
    victims = _victims(rows, references)
    fig, axes = plt.subplots(1, len(fractions), figsize=(6 * len(fractions) + 1.5, 3.6),
                             sharey=True)
    axes = [axes] if len(fractions) == 1 else axes
    for ax, fraction in zip(axes, fractions):
        width = 0.8 / len(kinds)
        for k, kind in enumerate(kinds):
            values = [next((r['mIoU'] for r in rows if (r['victim'], r['kind'], r['fraction'],
                                                         r['budget']) == (v, kind, fraction,
                                                                          budget)), 0)
                      for v in victims]
            ax.bar([i + (k - 1.5) * width for i in range(len(victims))], values, width,
                   label=kind.replace('_', '-'))
        scratch = next((r['mIoU'] for r in rows if (r['kind'], r['fraction'], r['budget']) ==
                        ('scratch', fraction, budget)), None)
        if scratch is not None:
            ax.axhline(scratch, color='k', ls='--', lw=1, label='scratch, same data')
        correct = [references.get(v, {}).get('correct') for v in victims]
        ax.scatter(range(len(victims)), [c or 0 for c in correct], marker='_', s=400,
                   color='r', label='correct key', zorder=3)
        ax.set_xticks(range(len(victims)), victims, rotation=30, ha='right', fontsize=8)
        ax.set_title(f'attacker holds {fraction:.0%} of the training set, {budget} iterations',
                     fontsize=9)
        ax.set_ylabel('mIoU')
    axes[-1].legend(fontsize=7, loc='upper left', bbox_to_anchor=(1.01, 1.0))
    fig.tight_layout()
    Path(out).parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)


def _references(paths: List[str]) -> Dict[str, Dict[str, float]]:
    """victim name -> correct / plain mIoU from key_conditions.json files (NAME=PATH)."""
    refs = {}
    for item in paths or []:
        name, path = item.split('=', 1)
        summary = json.loads(Path(path).read_text())['summary']
        refs[name] = {c: summary[c]['mIoU'] for c in ('correct', 'plain') if c in summary}
        if 'incorrect' in summary:
            inc = summary['incorrect']
            refs[name].update(incorrect=inc['mean']['mIoU'], incorrect_std=inc['std']['mIoU'],
                              incorrect_max=inc['max']['mIoU'], keys=inc['num_keys'])
    return refs


def conditions_table(refs: Dict[str, Dict[str, float]], baseline: Optional[float]) -> str:
    """Markdown: correct / plain / incorrect mIoU per victim, plain as a share of baseline."""
    lines = ['| victim | correct key | plain | plain / baseline | incorrect keys (mean ± std, '
             'max) |', '|---|---:|---:|---:|---:|']
    for name, ref in refs.items():
        share = f"{ref['plain'] / baseline:.1%}" if baseline and 'plain' in ref else '-'
        incorrect = (f"{ref['incorrect']:.2f} ± {ref['incorrect_std']:.2f}, "
                     f"{ref['incorrect_max']:.2f} ({ref['keys']} keys)"
                     if 'incorrect' in ref else '-')
        lines.append(f"| {name} | {_fmt(ref.get('correct'))} | {_fmt(ref.get('plain'))} | "
                     f'{share} | {incorrect} |')
    return '\n'.join(lines)


def cmd_report(args: argparse.Namespace) -> str:
    rows = _read(args.results)
    refs = _references(args.reference)
    tables = [report_table(rows, args.budget, refs), budget_table(rows)]
    if refs:
        tables.insert(0, conditions_table(refs, args.baseline))
    text = '\n\n'.join(tables)
    print(text)
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
    return parser.parse_args(argv)


def main(argv=None) -> Any:
    args = parse_args(argv)
    return {'key-search': cmd_key_search, 'run': cmd_run, 'report': cmd_report,
            'audit': cmd_audit}[
        args.command](args)


if __name__ == '__main__':
    main()
