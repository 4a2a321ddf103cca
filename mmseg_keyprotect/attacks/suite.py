"""The attack suite of ``tools/attack.py``: attack specs from an attack config, and runs.

An attack config (``configs/attacks/``) names a victim (config, work_dir; for
``weight_matching`` also ``reference``, the public checkpoint it was fine-tuned from) and the
attacks, data fractions, budgets and optimizers; :func:`run_suite` runs every
attack not yet in the results file and appends one JSON line per attack.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Sequence

from mmengine.config import Config

from ..checkpoint import find_checkpoint
from .config import FIXED_INIT, AttackSpec
from .runner import run_attack, true_permutations

__all__ = ['stolen_checkpoint', 'attack_specs', 'finished_runs', 'run_suite']


def stolen_checkpoint(victim_cfg: Dict[str, Any], init: str = 'checkpoint') -> str:
    """The stolen file: the best checkpoint (else the last ``iter_*.pth``, when the victim
    kept no ``best_*.pth``), or for ``init='momentum'`` the last ``iter_*.pth``.

    ``victim_cfg['checkpoint']`` / ``['iter_checkpoint']`` name it, else it is looked up
    in ``victim_cfg['work_dir']``.
    """
    field, which = ('checkpoint', 'best') if init == 'checkpoint' else ('iter_checkpoint', 'last')
    if victim_cfg.get(field):
        return victim_cfg[field]
    try:
        return find_checkpoint(victim_cfg['work_dir'], which)
    except FileNotFoundError as err:
        error = err
    if which == 'best':  # mmseg's default CheckpointHook keeps no best_*.pth: the last one
        try:
            return find_checkpoint(victim_cfg['work_dir'], 'last')
        except FileNotFoundError:
            pass
    raise FileNotFoundError(f"{error}; train the victim first (tools/train.py "
                            f"{victim_cfg['config']})")


def attack_specs(attack_cfg: Config, kinds: Optional[Sequence[str]] = None,
                 fractions: Optional[Sequence[float]] = None,
                 budgets: Optional[Sequence[int]] = None,
                 inits: Optional[Sequence[str]] = None) -> List[AttackSpec]:
    """The attacks of an attack config (each argument overrides the config's list)."""
    kinds = kinds or attack_cfg.attacks
    fractions = fractions or attack_cfg.fractions
    budgets = budgets or attack_cfg.budgets
    inits = inits or attack_cfg.get('inits', ['checkpoint'])
    specs = []
    # scratch starts from nothing stolen, weight matching from the matched stolen weights:
    # one run each, whatever the inits
    pairs = [(k, i) for k in kinds for i in (inits if k not in FIXED_INIT else ['checkpoint'])]
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
                    init=init, reference=attack_cfg.victim.get('reference')))
    return specs


def finished_runs(out: Path) -> set:
    """(victim, kind, init, fraction, budget, seed) of every run already in ``out``."""
    if not out.exists():
        return set()
    return {(r['victim'], r['kind'], r.get('init', 'checkpoint'), r['fraction'], r['budget'],
             r['seed']) for r in map(json.loads, out.read_text().splitlines()) if r}


def run_suite(attack_cfg: Config, victim: Config, name: str, specs: Iterable[AttackSpec],
              out: Path, work_dir: str, score_recovery: bool = False,
              echo: bool = True) -> List[Dict[str, Any]]:
    """Run every attack of ``specs`` not yet in ``out``; append one JSON line per attack.

    Args:
        attack_cfg: the attack config (its ``victim`` names the stolen files).
        victim: the victim's (protected) config.
        name: the victim's name in the results.
        specs: the attacks (:func:`attack_specs`).
        out: the JSON-lines results file.
        work_dir: where each attack's runner writes.
        score_recovery: owner only: score Sinkhorn's recovered permutation with the key.
        echo: print each result line.

    Returns:
        list[dict]: the results of the attacks run now.
    """
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    done = finished_runs(out)
    truth = true_permutations(victim) if score_recovery else None
    results = []
    for spec in specs:
        # Training from scratch does not use the stolen model: one run serves every victim
        # of the same architecture and data.
        victim_name = 'scratch' if spec.kind == 'scratch' else name
        ident = (victim_name, spec.kind, spec.init, spec.fraction, spec.budget, spec.seed)
        if ident in done:
            continue
        run_dir = str(Path(work_dir) / victim_name / spec.slug)
        checkpoint = None if spec.kind == 'scratch' else \
            stolen_checkpoint(attack_cfg.victim, spec.init)
        result = dict(victim=victim_name, **run_attack(victim, checkpoint, spec, run_dir, truth))
        done.add(ident)
        if echo:
            print(json.dumps(result), flush=True)
        with out.open('a') as f:
            f.write(json.dumps(result) + '\n')
        results.append(result)
    return results
