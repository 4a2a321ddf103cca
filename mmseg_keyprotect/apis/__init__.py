"""The public API: load a protected model, or evaluate it under every key condition.

Everything here works from a config and a checkpoint, like mmseg's own
``init_model`` / ``MMSegInferencer`` / ``tools/test.py``, and adds what a
protected model needs:

* the key (``key=``: a :class:`~mmseg_keyprotect.keys.SecretKey`, a key file
  path, or a key source dict) replaces every key source of the config before
  anything is built, and its fingerprint is compared with the one recorded in
  the checkpoint (:class:`~mmseg_keyprotect.protection.KeyMismatchError` shows both);
* ``condition='plain'`` or ``'incorrect'`` read no key at all: the keyed parts
  run plain (or under an incorrect key drawn from ``seed``), and weights sealed
  with the key load as they are stored — what a holder of the checkpoint alone gets;
* checkpoints load through the weights-only loaders
  (:func:`~mmseg_keyprotect.checkpoint.install_safe_loaders`).

Example:
    >>> model = init_protected_model('configs/demo/fcn_r18-d8_perm-m1to6-encw_demo.py',
    ...                              'work_dirs/demo/best.pth', key='work_dirs/owner.key')
    ... # doctest: +SKIP
    >>> report = evaluate_key_conditions(CONFIG, CHECKPOINT, work_dir='work_dirs/eval',
    ...                                  incorrect=100)  # doctest: +SKIP
    >>> report['summary']['correct']['mIoU']  # doctest: +SKIP
"""
from __future__ import annotations

import copy
import secrets
import warnings
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Union

from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import nn

from ..checkpoint import (MANIFEST_KEY, META_KEY, META_MAC_KEY, install_safe_loaders, save_atomically,
                          seal_file, sealing)
from ..keys import (COMPONENT_FIELDS, KeyLike, SecretKey, key_from, replace_key_sources,
                   resolve_key_sources)
from ..protection import KeyCondition, Protection, check_key_fingerprints

__all__ = ['KeySetupError', 'CONDITIONS', 'load_config', 'prepare_keys', 'check_checkpoint_key',
           'init_protected_model', 'protected_inferencer', 'evaluate_key_conditions',
           'checkpoint_protection', 'export_sealed', 'META_KEY', 'protect_model', 'rekey_model']

#: The key conditions a model can be loaded under.
CONDITIONS = ('correct', 'plain', 'incorrect')

ConfigLike = Union[str, Path, Config]


class KeySetupError(ValueError):
    """The key cannot be read (missing or unreadable file, unset variable ...)."""


def load_config(config: ConfigLike, cfg_options: Optional[Mapping[str, Any]] = None) -> Config:
    """A copy of ``config`` (a path or a ``Config``) with ``cfg_options`` merged in.

    Raises:
        FileNotFoundError: if a config path does not exist.
    """
    if isinstance(config, (str, Path)):
        if not Path(config).is_file():
            raise FileNotFoundError(f'config {str(config)!r} does not exist')
        cfg = Config.fromfile(str(config))
    else:
        cfg = copy.deepcopy(config)
    if cfg_options:
        cfg.merge_from_dict(dict(cfg_options))
    return cfg


def prepare_keys(cfg: Config, condition: str = 'correct',
                 key: Optional[KeyLike] = None) -> List[SecretKey]:
    """Put the keys a run needs into every key source of ``cfg``, in place, before building.

    ``correct``: ``key`` (replacing every key source), else the config's own sources
    that the model and dataloaders use (:data:`~mmseg_keyprotect.keys.COMPONENT_FIELDS`).
    ``plain`` / ``incorrect``: a throw-away key that is never used (the parts run
    plain or under an incorrect key), so no key file or variable is read; weights
    sealed with the key load as stored.

    Returns:
        list[SecretKey]: the keys the correct condition uses (empty otherwise, or
        when the config has no key).

    Raises:
        KeySetupError: a missing, unreadable or malformed key (naming the file or
            variable), or a ``key`` that is no key, path or source.
        ValueError: an unknown condition.
    """
    if condition not in CONDITIONS:
        raise ValueError(f'condition must be one of {CONDITIONS}, got {condition!r}')
    try:
        if condition != 'correct':
            replace_key_sources(cfg, SecretKey.generate())
            Protection.from_config(cfg).load_weights_as_stored()
            return []
        if key is None:  # the keys the model and data use (not unused config variables)
            return list(dict.fromkeys(resolve_key_sources(cfg, COMPONENT_FIELDS).values()))
        given = key_from(key)
    except (OSError, KeyError, ValueError) as err:
        raise KeySetupError(err.args[0] if err.args else type(err).__name__) from None
    return [given] if replace_key_sources(cfg, given) else []


def checkpoint_protection(checkpoint: str) -> Optional[List[Dict[str, Any]]]:
    """The protection descriptor recorded in a checkpoint's meta (None: none recorded)."""
    from mmengine.runner import CheckpointLoader
    install_safe_loaders()
    loaded = CheckpointLoader.load_checkpoint(str(checkpoint), map_location='cpu')
    return (loaded.get('meta') or {}).get(META_KEY)


def check_checkpoint_key(checkpoint: str, keys: Sequence[SecretKey]) -> Optional[str]:
    """Compare ``keys`` with the key fingerprints recorded in the checkpoint's meta.

    Returns:
        str or None: a warning when the checkpoint records no protection.

    Raises:
        KeyMismatchError: the fingerprints differ (the message shows both; they are
            not secret).
    """
    stored = checkpoint_protection(checkpoint)
    if stored is None:
        return (f'the checkpoint has no {META_KEY!r} meta (saved without KeyProtectionHook): '
                'cannot check that the key is the one it was trained with') if keys else None
    check_key_fingerprints(stored, keys)
    return None


def _condition(protection: Protection, condition: Union[str, KeyCondition],
               seed: int) -> KeyCondition:
    if isinstance(condition, KeyCondition):
        return condition
    if condition == 'incorrect':
        keys, _ = protection.incorrect_keys(1, seed)
        return KeyCondition.incorrect(keys[0], 0)
    return KeyCondition(condition)


def _prepared(config: ConfigLike, checkpoint: Optional[str], key: Optional[KeyLike],
              condition: Any, cfg_options: Optional[Mapping[str, Any]]) -> Config:
    """The config with its keys in place; checks the key against the checkpoint first.

    A checkpoint that records no protection gives a ``UserWarning`` (the key cannot be
    checked).
    """
    kind = condition.kind if isinstance(condition, KeyCondition) else condition
    if kind not in CONDITIONS:
        raise ValueError(f'condition must be one of {CONDITIONS}, got {condition!r}')
    if checkpoint is not None and not Path(checkpoint).is_file() and '://' not in str(checkpoint):
        raise FileNotFoundError(f'checkpoint {str(checkpoint)!r} does not exist')
    cfg = load_config(config, cfg_options)
    keys = prepare_keys(cfg, kind, key)
    note = check_checkpoint_key(checkpoint, keys) if checkpoint and kind == 'correct' else None
    if note:
        warnings.warn(note)
    init_default_scope(cfg.get('default_scope', 'mmseg'))
    install_safe_loaders()
    return cfg


def init_protected_model(config: ConfigLike, checkpoint: Optional[str] = None,
                         key: Optional[KeyLike] = None,
                         condition: Union[str, KeyCondition] = 'correct', device: str = 'cpu',
                         seed: int = 0,
                         cfg_options: Optional[Mapping[str, Any]] = None) -> nn.Module:
    """Build a protected model from a config and load its checkpoint, under one key condition.

    Args:
        config: config path or ``Config``.
        checkpoint: checkpoint path (None: initial weights).
        key: the key for ``correct`` (a :class:`SecretKey`, a key file path or a
            key source dict); None uses the config's own key sources.
        condition: ``'correct'``, ``'plain'``, ``'incorrect'`` or a :class:`KeyCondition`.
        device: as for mmseg's ``init_model``.
        seed: seed of the incorrect key (drawn distinct from the model's key).
        cfg_options: config overrides, as ``--cfg-options``.

    Returns:
        nn.Module: mmseg's ``init_model`` result (``model.cfg`` is the prepared
        config) with the condition applied to every keyed part of the model.

    Raises:
        KeySetupError, KeyMismatchError, FileNotFoundError, ValueError: before
            anything is built.
    """
    from mmseg.apis import init_model
    cfg = _prepared(config, checkpoint, key, condition, cfg_options)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore', UserWarning)
        model = init_model(cfg, checkpoint, device=device)
    protection = Protection.of(model)
    protection.apply(_condition(protection, condition, seed))
    return model


def export_sealed(model: nn.Module, path: Union[str, Path],
                  meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Write ``model``'s weights for deployment: the one blessed export of a protected model.

    The file is a sealed checkpoint (``meta`` with the protection descriptor and
    the manifest, ``state_dict`` sealed with the model's weight-encryption key),
    written atomically; :func:`init_protected_model` (or ``tools/infer.py``)
    loads it with the config and the key. Nothing in it is clear: unlike
    ``torch.save(model.state_dict())``, ``torch.jit``, ``torch.export`` or ONNX
    (which hold the clear model and the key's permutations; see
    ``docs/security.md``).

    Args:
        model: a built protected model with ``encrypt_weights=True``.
        path: the file to write (replaced if it exists).
        meta: other ``meta`` fields to keep (``dataset_meta`` ...); a previous
            protection descriptor, its HMAC or manifest in it is replaced.

    Returns:
        Path: ``path``.

    Raises:
        ValueError: if ``model`` does not encrypt its weights.
    """
    encryption = Protection.of(model).weight_encryption
    if encryption is None:
        raise ValueError(f'{type(model).__name__} does not encrypt its weights: export_sealed '
                         'needs protection.encrypt_weights=True')
    with sealing():
        kept = {k: v for k, v in dict(meta or {}).items()
                if k not in (META_KEY, META_MAC_KEY, MANIFEST_KEY)}
        checkpoint = {'meta': {'iter': None, **kept}, 'state_dict': model.state_dict()}
    seal_file(checkpoint, model, encryption.key, run=f'export-{secrets.token_hex(8)}')
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    save_atomically(checkpoint, path)
    return Path(path)


def protected_inferencer(config: ConfigLike, checkpoint: str, key: Optional[KeyLike] = None,
                         condition: Union[str, KeyCondition] = 'correct', device: str = 'cpu',
                         seed: int = 0, cfg_options: Optional[Mapping[str, Any]] = None):
    """mmseg's ``MMSegInferencer`` for a protected model, under one key condition.

    The condition reaches the ciphers of the inferencer's pipeline and the
    model's keyed parts alike. Arguments as for :func:`init_protected_model`.

    Returns:
        mmseg.apis.MMSegInferencer
    """
    from mmseg.apis import MMSegInferencer
    cfg = _prepared(config, checkpoint, key, condition, cfg_options)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        inferencer = MMSegInferencer(model=cfg, weights=checkpoint, device=device)
    protection = Protection.of(inferencer.model, inferencer.pipeline)
    protection.apply(_condition(protection, condition, seed))
    return inferencer


def evaluate_key_conditions(config: ConfigLike, checkpoint: Optional[str], work_dir: str,
                            key: Optional[KeyLike] = None, incorrect: int = 100, seed: int = 0,
                            cfg_options: Optional[Mapping[str, Any]] = None,
                            **loop_options: Any) -> Dict[str, Any]:
    """Evaluate a checkpoint under correct, plain and ``incorrect`` keys on the test set.

    Runs ``KeyConditionTestLoop`` through :class:`~mmseg_keyprotect.engine.runner.KeyProtectedRunner`
    exactly as mmseg's ``tools/test.py`` would with the config, and writes
    ``key_conditions.json`` / ``.md`` to ``work_dir``.

    Args:
        config, checkpoint, key, cfg_options: as for :func:`init_protected_model`.
        work_dir: where the runner writes its log and the reports.
        incorrect: number of incorrect keys.
        seed: seed of the incorrect keys.
        **loop_options: other ``KeyConditionTestLoop`` arguments (``plain``,
            ``share_prefix``, ``out_name`` ...).

    Returns:
        dict: the JSON report (``summary``, ``per_condition``, ``protection`` ...)
        plus ``metrics`` (the flat metrics the loop returned).
    """
    from ..engine.runner import KeyProtectedRunner
    cfg = _prepared(config, checkpoint, key, 'correct', cfg_options)
    loop = {k: v for k, v in dict(cfg.get('test_cfg') or {}).items() if k != 'type'}
    loop.update(type='KeyConditionTestLoop', incorrect=incorrect, seed=seed, **loop_options)
    cfg.test_cfg = loop
    cfg.load_from = checkpoint
    cfg.work_dir = str(work_dir)
    runner = KeyProtectedRunner.from_cfg(cfg)
    metrics = runner.test()
    return dict(runner.test_loop.report, metrics={k: float(v) for k, v in metrics.items()})


def protect_model(config: ConfigLike, checkpoint: str, key: Union[str, Path],
                  out_dir: Union[str, Path], method: str = 'permutation', points: Any = 'auto',
                  evaluate: bool = True, incorrect: int = 100, seed: int = 0,
                  device: str = 'cpu', cipher: str = 'BlockShuffle'):
    """Protect a trained, unprotected checkpoint with a key in seconds, without training.

    Writes ``out_dir/protected_config.py`` (inheriting ``config``, the key named by
    its file) and ``out_dir/protected.pth`` (sealed with the key), checks that the
    written model under the key computes what the original did (max |logit
    difference| <= 1e-4), then runs the key-condition test if the config's test
    data exists. See :mod:`mmseg_keyprotect.posthoc` and ``docs/posthoc.md``.

    Args:
        config: the unprotected config (path).
        checkpoint: its trained checkpoint.
        key: the key file (``tools/keygen.py``).
        out_dir: where the files go.
        method: ``'permutation'`` or ``'patch-embedding'``.
        points: the permutation points (``'auto'``, presets or module paths).
        evaluate: run the key-condition test when test data is configured.
        incorrect: the number of incorrect keys of that test.
        seed: their seed.
        device: where the model runs.
        cipher: the block cipher of ``'patch-embedding'`` (``'BlockShuffle'``,
            ``'BlockNegPos'``), block size = patch size.

    Returns:
        mmseg_keyprotect.apis.protect.Protected: the files written and the checks.
    """
    from .protect import protect_checkpoint
    return protect_checkpoint(config, checkpoint, key, out_dir, method, points, evaluate,
                              incorrect, seed, device, cipher)


def rekey_model(config: ConfigLike, checkpoint: str, key: Union[str, Path],
                new_key: Union[str, Path], out_dir: Union[str, Path], evaluate: bool = True,
                incorrect: int = 100, seed: int = 0, device: str = 'cpu'):
    """Move a permutation-protected checkpoint from key ``key`` to ``new_key``, exactly.

    The weights are opened with the old key in memory only and written sealed with
    the new key; the old key no longer works. Block ciphers are refused (a CNN
    needs retraining for a new cipher key). Arguments as for :func:`protect_model`.

    Returns:
        mmseg_keyprotect.apis.protect.Protected: the files written and the checks.
    """
    from .protect import rekey_checkpoint
    return rekey_checkpoint(config, checkpoint, key, new_key, out_dir, evaluate, incorrect,
                            seed, device)
