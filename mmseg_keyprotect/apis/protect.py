"""Protect a trained checkpoint, or change its key: config + sealed checkpoint, checked exact.

:func:`protect_checkpoint` and :func:`rekey_checkpoint` are what
``tools/protect.py`` (and :func:`mmseg_keyprotect.apis.protect_model` /
:func:`~mmseg_keyprotect.apis.rekey_model`) run:

1. load the model (plain, or protected under the old key);
2. transform its weights (:mod:`.absorb`, :mod:`.patch_embedding`, :mod:`.rekey`);
3. write a config inheriting the given one with the protection added, and the
   weights sealed with the key (:mod:`.output`);
4. load what was written through the normal protected loader, under the key,
   and compare it with the original model (exactness checked on the files);
5. run the key-condition test loop if the config's test dataset exists.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import torch
from mmengine.config import Config
from torch import nn

from . import evaluate_key_conditions, export_sealed, init_protected_model, load_config
from ..checkpoint import install_safe_loaders
from ..keys import find_key_sources
from ..keys import SecretKey
from ..models.points import PointSpec
from ..protection import Protection
from ..posthoc.absorb import DEFAULT_ATOL, absorb_permutations, max_output_difference
from .output import CUSTOM_IMPORTS, key_field, nested_override, write_config
from ..posthoc.patch_embedding import transform_patch_embedding
from ..posthoc.rekey import refuse_block_ciphers, rekey_permutations
from ..posthoc.segmentor import forward_heads, normalised, random_images

__all__ = ['METHODS', 'Protected', 'protect_checkpoint', 'rekey_checkpoint', 'compare_on_images']

#: The post-hoc protection methods.
METHODS = ('permutation', 'patch-embedding')
_PROTECTED_TYPES = {'EncoderDecoder': 'KeyProtectedEncoderDecoder',
                    'CascadeEncoderDecoder': 'KeyProtectedCascadeEncoderDecoder'}
CONFIG_NAME = 'protected_config.py'
CHECKPOINT_NAME = 'protected.pth'


@dataclass
class Protected:
    """What was written, and the checks made.

    Attributes:
        config: the protected config.
        checkpoint: the sealed checkpoint.
        points: the points protected (or the patch embedding transformed).
        refused: one line per point left out.
        max_difference: the largest |output difference| between the original
            model and the written one loaded under the key.
        seconds: time per step (``transform``, ``write``, ``check``, ``evaluate``).
        report: the key-condition report (None if not run).
    """

    config: Path
    checkpoint: Path
    points: List[str]
    refused: List[str] = field(default_factory=list)
    max_difference: float = 0.0
    seconds: Dict[str, float] = field(default_factory=dict)
    report: Optional[Dict[str, Any]] = None


def _key_source(key_file: Union[str, Path]) -> Tuple[SecretKey, Dict[str, str]]:
    return SecretKey.from_file(key_file), dict(file=str(key_file))


def _load_plain(config: Union[str, Path], checkpoint: str, device: str) -> Tuple[Config,
                                                                                 nn.Module]:
    from mmseg.apis import init_model
    cfg = load_config(config)
    # A top-level ``key`` only declares the key its children's keyed parts copy (the
    # configs/stanford_background/ base does): a keyed part holds its own key field.
    sources = [path for path, _ in find_key_sources(cfg) if path != 'key']
    if sources:
        raise ValueError(f'{config} is already protected (key sources at {sources}); use '
                         '`tools/protect.py rekey` to change its key')
    install_safe_loaders()
    model = init_model(cfg, str(checkpoint), device=device)
    return cfg, model.eval()


def _checkpoint_meta(checkpoint: str) -> Dict[str, Any]:
    from mmengine.runner import CheckpointLoader
    loaded = CheckpointLoader.load_checkpoint(str(checkpoint), map_location='cpu')
    return dict(loaded.get('meta') or {})


def _has_test_data(cfg: Config) -> bool:
    dataset = (cfg.get('test_dataloader') or {}).get('dataset') or {}
    root = dataset.get('data_root')
    return bool(root) and Path(root).is_dir()


def _write_and_check(reference: nn.Module, state_dict: Mapping[str, torch.Tensor],
                     config_path: Path, key: SecretKey, meta: Mapping[str, Any],
                     out_dir: Path, points: Sequence[str], device: str,
                     input_size: Optional[Tuple[int, int]], atol: float,
                     seconds: Dict[str, float]) -> Tuple[Path, float]:
    """Build the protected model from the written config, seal the weights, reload, compare."""
    start = time.perf_counter()
    protected = init_protected_model(config_path, None, key=key, device=device)
    own = protected.state_dict()
    missing = sorted(set(own) - set(state_dict))
    if missing:
        raise ValueError(f'the protected config builds tensors the transformed weights lack: '
                         f'{missing[:5]}')
    with torch.no_grad():
        for name, tensor in own.items():
            tensor.copy_(state_dict[name])
    checkpoint = export_sealed(protected, out_dir / CHECKPOINT_NAME, meta)
    seconds['write'] = time.perf_counter() - start
    start = time.perf_counter()
    loaded = init_protected_model(config_path, str(checkpoint), key=key, device=device)
    difference = compare_on_images(reference, loaded, input_size)
    if not difference <= atol:
        raise ValueError(f'the written model at [{", ".join(points)}] is not exact under the '
                         f'key: max |output difference| {difference:.3g} > {atol:g}')
    seconds['check'] = time.perf_counter() - start
    return checkpoint, difference


def compare_on_images(reference: nn.Module, protected: nn.Module,
                      input_size: Optional[Tuple[int, int]] = None) -> float:
    """The largest |output difference| of two models on the same random uint8 images, each
    through its own data preprocessor (a cipher preprocessor encrypts them with its key)."""
    images = random_images(reference, input_size, count=2, seed=2)
    with torch.no_grad():
        expected = forward_heads(reference.eval(), normalised(reference, images))
        got = forward_heads(protected.eval(), normalised(protected, images))
    return max_output_difference(expected, got)


def _evaluate(result: Protected, cfg: Config, key: SecretKey, out_dir: Path, evaluate: bool,
              incorrect: int, seed: int) -> None:
    if not evaluate or not _has_test_data(cfg):
        return
    start = time.perf_counter()
    result.report = evaluate_key_conditions(result.config, str(result.checkpoint),
                                            work_dir=str(out_dir / 'key_conditions'), key=key,
                                            incorrect=incorrect, seed=seed)
    result.seconds['evaluate'] = time.perf_counter() - start


def protect_checkpoint(config: Union[str, Path], checkpoint: str, key_file: Union[str, Path],
                       out_dir: Union[str, Path], method: str = 'permutation',
                       points: Any = 'auto', evaluate: bool = True, incorrect: int = 100,
                       seed: int = 0, device: str = 'cpu', cipher: str = 'BlockShuffle',
                       input_size: Optional[Tuple[int, int]] = None,
                       atol: float = DEFAULT_ATOL) -> Protected:
    """Protect a trained (unprotected) checkpoint with a key, without training.

    Args:
        config: the model's (unprotected) config.
        checkpoint: its trained checkpoint.
        key_file: the key file (``tools/keygen.py``); the written config names it.
        out_dir: where ``protected_config.py`` and ``protected.pth`` are written.
        method: ``'permutation'`` (absorbed channel permutations) or
            ``'patch-embedding'`` (key-transformed patch embedding, ViTs).
        points: the permutation points (``'auto'``, presets or module paths).
        evaluate: run the key-condition test if the config's test data exists.
        incorrect: the number of incorrect keys of that test.
        seed: the seed of the incorrect keys.
        device: where the model runs.
        cipher: the block cipher of ``'patch-embedding'`` (block size = patch
            size, in the data preprocessor): ``'BlockShuffle'``, ``'BlockNegPos'``,
            ``'BlockScramble'`` or ``'BlockScramble+BlockShuffle'`` /
            ``'BlockScramble+BlockNegPos'`` (blocks also change places; mmseg
            ``VisionTransformer`` only, ``whole`` inference at its ``img_size``;
            the model then needs the key to put its outputs back in place).
        input_size: ``(H, W)`` of the random checks (default: the training crop).
        atol: the largest output difference accepted.

    Returns:
        Protected: the files written and the checks.

    Raises:
        ValueError: an unknown method, an already protected config, a model
            type that cannot be protected, or a check that fails.
        PointRefused: a point given by path that cannot be kept exact.
    """
    if method not in METHODS:
        raise ValueError(f'method must be one of {METHODS}, got {method!r}')
    out_dir = Path(out_dir)
    cfg, model = _load_plain(config, checkpoint, device)
    model_type = cfg.model.get('type')
    if model_type not in _PROTECTED_TYPES:
        raise ValueError(f'cannot protect a {model_type!r} model; supported: '
                         f'{sorted(_PROTECTED_TYPES)}')
    key, source = _key_source(key_file)
    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    if method == 'permutation':
        absorbed = absorb_permutations(model, points, key, input_size, atol)
        state_dict, specs, refused = absorbed.state_dict, absorbed.points, absorbed.refused
        protection = dict(key=source, points=[_point_cfg(s) for s in specs],
                          encrypt_weights=True)
        overrides: Dict[str, Any] = dict(model=dict(type=_PROTECTED_TYPES[model_type],
                                                    protection=protection))
        names = [s.name() for s in specs]
    else:
        transformed = transform_patch_embedding(model, key, cipher=cipher,
                                                input_size=input_size, atol=atol)
        state_dict, names, refused = transformed.state_dict, transformed.points, []
        overrides = dict(model=dict(type=_PROTECTED_TYPES[model_type],
                                    protection=dict(key=source, points=[],
                                                    encrypt_weights=True,
                                                    **transformed.protection),
                                    **transformed.model_overrides(source)))
    seconds['transform'] = time.perf_counter() - start
    overrides.update(custom_imports=CUSTOM_IMPORTS, runner_type='KeyProtectedRunner',
                     val_cfg=dict(type='KeyConditionValLoop', plain=True),
                     test_cfg=dict(type='KeyConditionTestLoop', incorrect=incorrect, seed=seed))
    config_path = write_config(out_dir / CONFIG_NAME, Path(config), overrides, [
        f'{Path(config).name} protected after training (tools/protect.py --method {method}).',
        'The weights in protected.pth are sealed with the key; the key is named by its file.'])
    checkpoint_path, difference = _write_and_check(model, state_dict, config_path, key,
                                                   _checkpoint_meta(checkpoint), out_dir, names,
                                                   device, input_size, atol, seconds)
    result = Protected(config_path, checkpoint_path, names, refused, difference, seconds)
    _evaluate(result, load_config(config_path), key, out_dir, evaluate, incorrect, seed)
    return result


def _point_cfg(spec: PointSpec) -> Dict[str, Any]:
    return dict(path=spec.path, where=spec.where, index=spec.index, channels=spec.channels,
                channel_dim=spec.channel_dim)


def rekey_checkpoint(config: Union[str, Path], checkpoint: str, key_file: Union[str, Path],
                     new_key_file: Union[str, Path], out_dir: Union[str, Path],
                     evaluate: bool = True, incorrect: int = 100, seed: int = 0,
                     device: str = 'cpu', input_size: Optional[Tuple[int, int]] = None,
                     atol: float = DEFAULT_ATOL) -> Protected:
    """Give a permutation-protected checkpoint a new key, exactly, without training.

    The checkpoint is opened with the old key in memory only; the weights are
    written sealed with the new key (``encrypt_weights=True``), so no plaintext
    weight reaches the disk, and the old key no longer opens or fits them.

    Args:
        config: the protected config the checkpoint was trained (or protected) with.
        checkpoint: its checkpoint (sealed or not).
        key_file: the old key's file.
        new_key_file: the new key's file; the written config names it.
        out_dir, evaluate, incorrect, seed, device, input_size, atol: as for
            :func:`protect_checkpoint`.

    Returns:
        Protected: the files written and the checks.

    Raises:
        ValueError: a block cipher (one line: why it needs retraining), no
            permutation point, the same key, or a failed check.
    """
    out_dir = Path(out_dir)
    cfg = load_config(config)
    refuse_block_ciphers(Protection.from_config(cfg), f'rekey {Path(config).name}')
    paths = key_field([path for path, _ in find_key_sources(cfg)])
    if 'model.protection.key' not in paths:
        raise ValueError(f'rekey {Path(config).name}: no model.protection.key in the config '
                         f'(key sources at {paths}); rekey needs a KeyProtectedEncoderDecoder')
    old_key = SecretKey.from_file(key_file)
    new_key, source = _key_source(new_key_file)
    model = init_protected_model(config, str(checkpoint), key=old_key, device=device).eval()
    seconds: Dict[str, float] = {}
    start = time.perf_counter()
    rekeyed = rekey_permutations(model, new_key, input_size, atol)
    seconds['transform'] = time.perf_counter() - start
    overrides = nested_override(paths, source)
    overrides['model'] = overrides.get('model', {})
    overrides['model'].setdefault('protection', {})['encrypt_weights'] = True
    config_path = write_config(out_dir / CONFIG_NAME, Path(config), overrides, [
        f'{Path(config).name} under a new key (tools/protect.py rekey).',
        'The weights in protected.pth are sealed with the new key, named by its file.'])
    checkpoint_path, difference = _write_and_check(model, rekeyed.state_dict, config_path,
                                                   new_key, _checkpoint_meta(checkpoint),
                                                   out_dir, rekeyed.points, device, input_size,
                                                   atol, seconds)
    result = Protected(config_path, checkpoint_path, rekeyed.points, [], difference, seconds)
    _evaluate(result, load_config(config_path), new_key, out_dir, evaluate, incorrect, seed)
    return result

