"""Early consistency checks of a protected config, and a non-secret protection descriptor.

Two checks that catch configuration mistakes before they cost a training run:

* :func:`check_block_alignment` reads a config and verifies that every size the
  image has when a block cipher sees it (``RandomCrop`` ``crop_size``, ``Pad``
  ``size``, a fixed-size ``Resize`` before the cipher) and every size the model
  cuts or pads the encrypted image to (the data preprocessor's ``size``; for
  ciphers in the val/test pipelines, ``slide`` inference's ``crop_size`` and
  ``stride``) is a multiple of the cipher's block size. A cipher in the data
  preprocessor (``BlockCipherSegDataPreProcessor``) sees the images after every
  pipeline transform, so every fixed size of every pipeline, the
  preprocessor's ``size``/``size_divisor`` (also in its ``test_cfg``) and the
  slide sizes are checked against it.
* :func:`describe_protection` lists the keyed components of a model and its
  dataloaders (type, block size or point, key fingerprint); it is stored in
  checkpoint meta, and :func:`check_protection` compares a stored descriptor
  with the current one, so a checkpoint trained with one protection is not
  silently evaluated under another. A cipher in the data preprocessor is
  described exactly like the same cipher in the pipeline: both give the model
  bit-identical inputs, so they are one protection, and a checkpoint trained
  with one placement is tested with the other.

The descriptor holds no key material: a fingerprint is 64 bits of
HMAC(key, constant) and identifies a key without revealing it.
"""
from __future__ import annotations

from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple

from mmseg.registry import TRANSFORMS
from torch import nn

from ..keys import SecretKey
from ..models.weight_encryption import weight_encryption_fingerprint
from ..transforms.block_cipher import BlockCipher
from .conditions import find_keyed_components

__all__ = [
    'ProtectionMismatchError', 'KeyMismatchError', 'check_block_alignment',
    'describe_protection', 'check_protection', 'check_key_fingerprints', 'format_protection'
]

Descriptor = List[Dict[str, Any]]

_LOADERS = ('train_dataloader', 'val_dataloader', 'test_dataloader')
# Transforms that fix the image size the next steps see: type -> size argument.
_SIZED_TRANSFORMS = {'RandomCrop': 'crop_size', 'Pad': 'size', 'Resize': 'scale'}


class ProtectionMismatchError(ValueError):
    """A checkpoint's stored protection differs from the protection of the config."""


class KeyMismatchError(ProtectionMismatchError):
    """The key given for a checkpoint is not the key it was trained with."""


def _is_cipher(transform: Any) -> bool:
    if not isinstance(transform, Mapping) or not isinstance(transform.get('type'), str):
        return False
    cls = TRANSFORMS.get(transform['type'])
    return isinstance(cls, type) and issubclass(cls, BlockCipher)


def _pipelines(dataset: Any, where: str) -> Iterator[Tuple[str, Sequence[Any]]]:
    """Every ``pipeline`` list inside a dataset config (wrapped datasets included)."""
    if isinstance(dataset, Mapping):
        pipeline = dataset.get('pipeline')
        if isinstance(pipeline, (list, tuple)):
            yield where, pipeline
        for field in ('dataset', 'datasets'):
            if field in dataset:
                yield from _pipelines(dataset[field], f'{where}.{field}')
    elif isinstance(dataset, (list, tuple)):
        for i, item in enumerate(dataset):
            yield from _pipelines(item, f'{where}.{i}')


def _sizes(value: Any) -> Tuple[int, ...]:
    """The integers of a size argument (an int or an (h, w) / (w, h) pair)."""
    values = value if isinstance(value, (list, tuple)) else (value, )
    return tuple(v for v in values if isinstance(v, int) and not isinstance(v, bool))


def _check_multiple(value: Any, what: str, block_size: int, cipher: str) -> None:
    if any(v % block_size for v in _sizes(value)):
        raise ValueError(
            f'{what}={tuple(value) if isinstance(value, (list, tuple)) else value} is not a '
            f'multiple of {cipher} block_size={block_size}: the encrypted image would be cut '
            f'through its {block_size}x{block_size} blocks; use sizes that are multiples of '
            f'{block_size}')


def check_block_alignment(cfg: Mapping[str, Any]) -> None:
    """Check that a config's crop, pad and slide sizes are multiples of its cipher block sizes.

    Args:
        cfg: a full config (``mmengine.Config`` or dict) with
            ``train/val/test_dataloader`` and ``model``.

    Raises:
        ValueError: naming the offending size, the transform or setting it
            belongs to, and the cipher's block size.

    Example:
        >>> check_block_alignment(Config.fromfile(
        ...     'configs/demo/fcn_r18-d8_shf-b2_demo.py'))  # doctest: +SKIP
    """
    model = cfg.get('model') or {}
    preprocessor = model.get('data_preprocessor') or {}
    shared = []  # sizes the model cuts or pads every encrypted image to
    size = preprocessor.get('size')
    if size is not None:
        shared.append(('model.data_preprocessor size', size))
    test_cfg = model.get('test_cfg') or {}
    slide = [(f"model.test_cfg (mode='slide') {arg}", test_cfg.get(arg))
             for arg in ('crop_size', 'stride')] if test_cfg.get('mode') == 'slide' else []
    for loader in _LOADERS:
        dataset = (cfg.get(loader) or {}).get('dataset')
        for where, pipeline in _pipelines(dataset, f'{loader}.dataset'):
            _check_pipeline(where, pipeline,
                            shared + (slide if loader != 'train_dataloader' else []))
    cipher = preprocessor.get('cipher')
    if _is_cipher(cipher) and _sizes(cipher.get('block_size')) and cipher['block_size'] >= 1:
        _check_preprocessor_cipher(cfg, preprocessor, cipher, slide)


def _check_preprocessor_cipher(cfg: Mapping[str, Any], preprocessor: Mapping[str, Any],
                               cipher: Mapping[str, Any], slide: List[Tuple[str, Any]]) -> None:
    """Check every size a data-preprocessor cipher's input or output is fixed to."""
    where = 'model.data_preprocessor'
    pre_test = preprocessor.get('test_cfg') or {}
    sizes = [(f'{where} {arg}', preprocessor.get(arg)) for arg in ('size', 'size_divisor')]
    sizes += [(f'{where}.test_cfg {arg}', pre_test.get(arg)) for arg in ('size', 'size_divisor')]
    sizes += slide
    for loader in _LOADERS:
        dataset = (cfg.get(loader) or {}).get('dataset')
        for name, pipeline in _pipelines(dataset, f'{loader}.dataset'):
            sizes += [s for i, t in enumerate(pipeline) if (s := _fixed_size(name, i, t))]
    for what, value in sizes:
        if value is not None:
            _check_multiple(value, what, cipher['block_size'],
                            f"{where} cipher {cipher['type']}")


def _fixed_size(where: str, i: int, transform: Any) -> Optional[Tuple[str, Any]]:
    """(name, size) if ``transform`` (item ``i`` of a pipeline) fixes the image size."""
    if not isinstance(transform, Mapping):
        return None
    kind = transform.get('type')
    arg = _SIZED_TRANSFORMS.get(kind)
    if arg is None or transform.get(arg) is None or \
            (kind == 'Resize' and transform.get('keep_ratio', False)):
        return None
    return f'{where}.pipeline[{i}] {kind} {arg}', transform[arg]


def _check_pipeline(where: str, pipeline: Sequence[Any], after: List[Tuple[str, Any]]) -> None:
    """Check the sizes fixed before each cipher of ``pipeline``, and ``after`` (name, size)."""
    sized: List[Tuple[str, Any]] = []
    for i, transform in enumerate(pipeline):
        if not isinstance(transform, Mapping):
            continue
        fixed = _fixed_size(where, i, transform)
        if fixed:
            sized.append(fixed)
        kind = transform.get('type')
        block_size = transform.get('block_size')
        if not _is_cipher(transform) or not _sizes(block_size) or block_size < 1:
            continue  # a malformed block size is reported by the cipher when it is built
        for what, value in sized + after:
            _check_multiple(value, what, block_size, kind)


def describe_protection(*targets: Any) -> Descriptor:
    """A non-secret description of the keyed components of ``targets``.

    Args:
        *targets: models, dataloaders, datasets or pipelines (see
            :func:`~mmseg_keyprotect.engine.conditions.find_keyed_components`).

    Returns:
        list[dict]: one entry per distinct component, sorted:
        ``{'type': 'BlockShuffle', 'block_size': 2, 'key': FINGERPRINT}`` or
        ``{'type': 'PointPermutation', 'point': 'decode_head.conv_seg:input',
        'key': FINGERPRINT}``, and ``{'type': 'WeightEncryption', 'key': FINGERPRINT}``
        for a model whose weights are encrypted with the key. The same cipher in
        several pipelines is listed once.
    """
    entries = {tuple(sorted(c.describe().items())) for c in find_keyed_components(*targets)}
    entries |= {(('key', fingerprint), ('type', 'WeightEncryption'))
                for fingerprint in _weight_encryption_fingerprints(targets)}
    return [dict(entry) for entry in sorted(entries, key=repr)]


def _weight_encryption_fingerprints(targets: Sequence[Any]) -> List[str]:
    """Key fingerprints of modules among ``targets`` that encrypt their weights."""
    found = []
    for target in targets:
        if isinstance(target, nn.Module):
            found += [fp for fp in map(weight_encryption_fingerprint, target.modules()) if fp]
    return found


def format_protection(descriptor: Descriptor) -> str:
    """``'[BlockShuffle(block_size=2, key=<fingerprint>)]'``; ``'none'`` when empty."""
    if not descriptor:
        return 'none'
    items = []
    for entry in descriptor:
        fields = ', '.join(f'{k}={v!r}' for k, v in entry.items() if k not in ('type', 'key'))
        items.append(f"{entry['type']}({fields + ', ' if fields else ''}key=<{entry['key']}>)")
    return '[' + ', '.join(items) + ']'


def check_protection(stored: Descriptor, current: Descriptor, what: str = 'checkpoint') -> None:
    """Raise unless a checkpoint's stored protection equals the config's.

    Args:
        stored: the descriptor saved in the checkpoint's meta.
        current: :func:`describe_protection` of the model and data being run.
        what: how to name the checkpoint in the message.

    Raises:
        ProtectionMismatchError: saying what was stored, what the config has,
            and which entries differ.
    """
    stored_set = {tuple(sorted(e.items())) for e in stored}
    current_set = {tuple(sorted(e.items())) for e in current}
    if stored_set == current_set:
        return
    only_stored = [dict(e) for e in sorted(stored_set - current_set, key=repr)]
    only_current = [dict(e) for e in sorted(current_set - stored_set, key=repr)]
    raise ProtectionMismatchError(
        f'{what} was trained with protection {format_protection(stored)}, but the config has '
        f'{format_protection(current)} (only in the {what}: {format_protection(only_stored)}; '
        f'only in the config: {format_protection(only_current)}). Evaluate it with the config '
        'and key it was trained with')


def check_key_fingerprints(stored: Descriptor, keys: Sequence[SecretKey],
                           what: str = 'checkpoint') -> None:
    """Raise unless ``keys`` are exactly the keys recorded in a stored descriptor.

    Compares fingerprints only, before a model is built or run, so a wrong key
    file fails with a clear message instead of giving poor segmentation.

    Args:
        stored: the descriptor saved in the checkpoint's meta
            (``checkpoint['meta']['key_protection']``).
        keys: the keys about to be used (e.g. the resolved key sources of the config).
        what: how to name the checkpoint in the message.

    Raises:
        KeyMismatchError: showing both sets of fingerprints (non-secret) and
            where the given keys came from.
    """
    expected = sorted({entry['key'] for entry in stored if 'key' in entry})
    given = {key.fingerprint: key.source for key in keys}
    if set(expected) == set(given):
        return
    shown = ', '.join(f'{fp} (from {src})' for fp, src in sorted(given.items())) or 'none'
    raise KeyMismatchError(
        f'key fingerprint {shown} does not match the fingerprint '
        f'{", ".join(expected) or "none"} recorded in the {what}: this is not the key the '
        'model was trained with')
