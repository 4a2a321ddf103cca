"""Block sizes against the image sizes of a config (and block scrambling against the model):
the protection's early config check."""
from __future__ import annotations

from typing import Any, List, Mapping, Optional, Sequence, Tuple

from .keyed_types import PipelineStep, PreprocessorCipher, config_pipelines, keyed_role

__all__ = ['check_sizes']

# Transforms that fix the image size the next steps see: type -> size argument.
_SIZED_TRANSFORMS = {'RandomCrop': 'crop_size', 'Pad': 'size', 'Resize': 'scale'}


def check_sizes(cfg: Mapping[str, Any]) -> None:
    """Check that the config's crop, pad and slide sizes are multiples of its block sizes.

    Every size the image has when a keyed pipeline step sees it
    (``RandomCrop`` ``crop_size``, ``Pad`` ``size``, a fixed-size
    ``Resize`` before the step) and every size the model cuts or pads the
    encrypted image to (the data preprocessor's ``size``; for val/test
    pipelines, ``slide`` inference's ``crop_size`` and ``stride``) must be
    a multiple of the step's block size. A cipher in the data
    preprocessor sees the images after every pipeline transform, so every
    fixed size of every pipeline and the preprocessor's
    ``size``/``size_divisor`` (also in its ``test_cfg``) are checked against it.
    A ``BlockScramble`` cipher also needs the model's ``protection.block_scramble``
    (and ``whole`` inference): without it the labels would not line up with the
    scrambled images.

    Raises:
        ValueError: naming the offending size, where it is set, and the block size
            (or the missing unscrambling).
    """
    model = cfg.get('model') or {}
    preprocessor = model.get('data_preprocessor') or {}
    shared = []  # sizes the model cuts or pads every encrypted image to
    if preprocessor.get('size') is not None:
        shared.append(('model.data_preprocessor size', preprocessor.get('size')))
    test_cfg = model.get('test_cfg') or {}
    slide = [(f"model.test_cfg (mode='slide') {arg}", test_cfg.get(arg))
             for arg in ('crop_size', 'stride')] if test_cfg.get('mode') == 'slide' else []
    for loader, where, pipeline in config_pipelines(cfg):
        _check_pipeline(where, pipeline,
                        shared + (slide if loader != 'train_dataloader' else []))
    role = keyed_role(preprocessor)
    block_size = role.block_size(preprocessor) if isinstance(role, PreprocessorCipher) \
        else None
    if block_size is not None:
        _check_preprocessor(cfg, preprocessor, role, block_size, slide)
    _check_scrambling(cfg, model, preprocessor, test_cfg)


def _check_scrambling(cfg: Mapping[str, Any], model: Mapping[str, Any],
                      preprocessor: Mapping[str, Any], test_cfg: Mapping[str, Any]) -> None:
    """A block-scrambling cipher needs a model that puts its outputs back in block order
    (``protection.block_scramble``, a ViT transformed by ``tools/protect.py``), and ``whole``
    inference."""
    steps = [step for _, _, pipeline in config_pipelines(cfg) for step in pipeline]
    ciphers = [preprocessor.get('cipher')] + steps
    scrambling = any(isinstance(c, Mapping) and c.get('type') == 'BlockScramble'
                     for c in ciphers)
    unscrambled = 'block_scramble' in (model.get('protection') or {})
    if scrambling and not unscrambled:
        raise ValueError(
            'BlockScramble moves whole blocks but not the labels: it is only for a ViT '
            'transformed with tools/protect.py --cipher BlockScramble..., whose '
            'protection.block_scramble puts its outputs back in block order; this model has none')
    if unscrambled and test_cfg.get('mode', 'whole') != 'whole':
        raise ValueError(f"model.protection.block_scramble is exact only under mode='whole' "
                         f"inference, got model.test_cfg mode={test_cfg.get('mode')!r}")


def _sizes(value: Any) -> Tuple[int, ...]:
    """The integers of a size argument (an int or an (h, w) / (w, h) pair)."""
    values = value if isinstance(value, (list, tuple)) else (value, )
    return tuple(v for v in values if isinstance(v, int) and not isinstance(v, bool))


def _check_multiple(value: Any, what: str, block_size: int, step: str) -> None:
    if any(v % block_size for v in _sizes(value)):
        raise ValueError(
            f'{what}={tuple(value) if isinstance(value, (list, tuple)) else value} is not a '
            f'multiple of {step} block_size={block_size}: the encrypted image would be cut '
            f'through its {block_size}x{block_size} blocks; use sizes that are multiples of '
            f'{block_size}')


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
    """Check the sizes fixed before each keyed step of ``pipeline``, and ``after``."""
    sized: List[Tuple[str, Any]] = []
    for i, transform in enumerate(pipeline):
        fixed = _fixed_size(where, i, transform)
        if fixed:
            sized.append(fixed)
        role = keyed_role(transform)
        block_size = role.block_size(transform) if isinstance(role, PipelineStep) else None
        if block_size is None:
            continue  # a malformed block size is reported by the step when it is built
        for what, value in sized + after:
            _check_multiple(value, what, block_size, transform['type'])


def _check_preprocessor(cfg: Mapping[str, Any], preprocessor: Mapping[str, Any],
                        role: PreprocessorCipher, block_size: int,
                        slide: List[Tuple[str, Any]]) -> None:
    """Check every size a data-preprocessor cipher's input or output is fixed to."""
    where = 'model.data_preprocessor'
    pre_test = preprocessor.get('test_cfg') or {}
    sizes = [(f'{where} {arg}', preprocessor.get(arg)) for arg in ('size', 'size_divisor')]
    sizes += [(f'{where}.test_cfg {arg}', pre_test.get(arg)) for arg in ('size', 'size_divisor')]
    sizes += slide
    for _, name, pipeline in config_pipelines(cfg):
        sizes += [s for i, t in enumerate(pipeline) if (s := _fixed_size(name, i, t))]
    step = f"{where} {role.field} {preprocessor[role.field]['type']}"
    for what, value in sizes:
        if value is not None:
            _check_multiple(value, what, block_size, step)
