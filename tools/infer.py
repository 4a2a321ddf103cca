"""Segment images with a protected model under the correct key, plain, or an incorrect key.

Writes, for every image, ``OUT/pred/NAME.png`` (the label map as a palette PNG with the
dataset's palette) and ``OUT/vis/NAME.png`` (the prediction drawn over the image by mmseg's
``SegLocalVisualizer``). The key comes from ``--key FILE`` or ``--key-env NAME`` (which
replace every key source of the config) or from the config itself; with the correct key,
its fingerprint is compared with the one recorded in the checkpoint first. ``plain`` and
``incorrect`` need no key at all.

Usage:
    python tools/infer.py IMAGES... --config CONFIG --checkpoint CKPT --out DIR
        [--key FILE | --key-env NAME] [--condition correct|plain|incorrect] [--seed 0]
"""
from __future__ import annotations

import argparse
import glob
import sys
import warnings
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np
from mmengine.config import Config, DictAction
from mmengine.registry import init_default_scope

import mmseg_keyprotect  # noqa: F401  (registers components, weights-only checkpoints)
from mmseg_keyprotect.engine import (KeyCondition, ProtectionMismatchError,
                                     check_key_fingerprints, key_condition, make_conditions)
from mmseg_keyprotect.engine.hooks import META_KEY
from mmseg_keyprotect.key_sources import replace_key_sources, resolve_key_sources
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models.protected import disable_weight_decryption

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


class UserError(Exception):
    """A mistake in the command line or its inputs: reported in one line, exit status 1."""


def expand_images(specs: Sequence[str]) -> List[Path]:
    """Files, directories (their images, sorted) and globs -> a list of image files.

    Raises:
        UserError: if a spec matches nothing, or two images would get the same output name.
    """
    images: List[Path] = []
    for spec in specs:
        path = Path(spec)
        if path.is_dir():
            found = sorted(p for p in path.iterdir()
                           if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        elif path.is_file():
            found = [path]
        elif glob.has_magic(spec):
            found = sorted(Path(p) for p in glob.glob(spec, recursive=True) if Path(p).is_file())
        else:
            raise UserError(f'image {spec!r} does not exist')
        if not found:
            raise UserError(f'{spec!r} matches no image ({", ".join(IMAGE_SUFFIXES)})')
        images.extend(found)
    names: Dict[str, Path] = {}
    for image in images:
        if image.stem in names and names[image.stem] != image:
            raise UserError(f'{str(names[image.stem])!r} and {str(image)!r} would both be '
                            f'written as {image.stem}.png; run them separately')
        names[image.stem] = image
    return list(dict.fromkeys(images))


def prepare_keys(cfg: Config, condition: str, key: Optional[str] = None,
                 key_env: Optional[str] = None) -> List[SecretKey]:
    """Put the keys the run needs into every key source of ``cfg``, before anything is built.

    ``correct``: the ``--key``/``--key-env`` key, else the config's own sources.
    ``plain``/``incorrect``: a throw-away key that is never used (the components run
    plain or under the incorrect key), so no key file or variable is read; weights
    encrypted with the key (``protection.encrypt_weights``) stay encrypted.

    Returns:
        list[SecretKey]: the keys the correct condition uses (empty otherwise, or when
        the config has no keyed component).

    Raises:
        UserError: a missing or unreadable key, naming the file or variable.
    """
    try:
        if condition != 'correct':
            replace_key_sources(cfg, SecretKey.generate())
            # Encrypted weights load as stored: what a holder of the checkpoint alone gets.
            disable_weight_decryption(cfg)
            return []
        if key is None and key_env is None:
            return list(resolve_key_sources(cfg).values())
        given = SecretKey.from_file(key) if key is not None else SecretKey.from_env(key_env)
    except (OSError, KeyError, ValueError) as err:
        raise UserError(err.args[0] if err.args else type(err).__name__) from None
    return [given] if replace_key_sources(cfg, given) else []


def check_checkpoint_key(checkpoint: str, keys: Sequence[SecretKey]) -> Optional[str]:
    """Compare ``keys`` with the key fingerprint recorded in the checkpoint's meta.

    Returns:
        str or None: a warning when the checkpoint records no protection.

    Raises:
        UserError: the fingerprints differ (the message shows both; they are not secret).
    """
    from mmengine.runner.checkpoint import _load_checkpoint
    meta = _load_checkpoint(checkpoint, map_location='cpu').get('meta') or {}
    stored = meta.get(META_KEY)
    if stored is None:
        return (f'the checkpoint has no {META_KEY!r} meta (saved without KeyProtectionHook): '
                'cannot check that the key is the one it was trained with') if keys else None
    try:
        check_key_fingerprints(stored, keys)
    except ProtectionMismatchError as err:
        raise UserError(str(err)) from None
    return None


def write_palette_png(label: np.ndarray, palette: Sequence[Sequence[int]], path: Path) -> None:
    """Save an HxW label map as a 'P' mode PNG whose palette is the dataset's."""
    from PIL import Image
    if label.max(initial=0) > 255:
        raise ValueError(f'label {int(label.max())} does not fit a palette PNG')
    image = Image.fromarray(label.astype(np.uint8))
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)[:256]
    image.putpalette(lut.ravel().tolist())
    image.save(path)


def infer(images: Sequence[Path], cfg: Config, checkpoint: str, out: Path,
          condition: KeyCondition, device: str = 'cpu', opacity: float = 0.5,
          with_labels: bool = False) -> List[Path]:
    """Segment ``images`` under ``condition`` with mmseg's ``MMSegInferencer``.

    Returns:
        list[Path]: the palette PNGs written (``out/pred/NAME.png``); overlays go to
        ``out/vis/NAME.png``.
    """
    import mmcv
    from mmengine.utils import track_iter_progress
    from mmseg.apis import MMSegInferencer

    init_default_scope(cfg.get('default_scope', 'mmseg'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        inferencer = MMSegInferencer(model=cfg, weights=checkpoint, device=device)
    inferencer.show_progress = False
    palette = inferencer.model.dataset_meta['palette']
    visualizer = inferencer.visualizer
    visualizer.set_dataset_meta(**inferencer.model.dataset_meta)
    visualizer.alpha = opacity
    (out / 'pred').mkdir(parents=True, exist_ok=True)
    (out / 'vis').mkdir(parents=True, exist_ok=True)
    written = []
    # The pipeline is built once: the condition reaches its ciphers and the model's keyed
    # components alike, and is restored afterwards.
    with key_condition(condition, inferencer.model, inferencer.pipeline):
        progress = track_iter_progress(list(images)) if len(images) > 1 else images
        for image in progress:
            sample = inferencer(str(image), return_datasamples=True)
            pred = out / 'pred' / f'{image.stem}.png'
            write_palette_png(sample.pred_sem_seg.data[0].cpu().numpy(), palette, pred)
            visualizer.add_datasample(image.stem, mmcv.imread(str(image), channel_order='rgb'),
                                      sample, draw_gt=False, draw_pred=True,
                                      with_labels=with_labels,
                                      out_file=str(out / 'vis' / f'{image.stem}.png'))
            written.append(pred)
    return written


def parse_args(argv: Optional[Sequence[str]] = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('images', nargs='+', metavar='IMAGES',
                        help='image files, directories or globs')
    parser.add_argument('--config', required=True)
    parser.add_argument('--checkpoint', required=True)
    parser.add_argument('--out', required=True, help='output directory (pred/ and vis/)')
    source = parser.add_mutually_exclusive_group()
    source.add_argument('--key', metavar='FILE', help='key file (replaces the config keys)')
    source.add_argument('--key-env', metavar='NAME',
                        help='environment variable holding the key (64 hex digits)')
    parser.add_argument('--condition', choices=('correct', 'plain', 'incorrect'),
                        default='correct', help='plain and incorrect need no key')
    parser.add_argument('--seed', type=int, default=0, help='seed of the incorrect key')
    parser.add_argument('--device', default='cpu')
    parser.add_argument('--opacity', type=float, default=0.5, help='overlay opacity')
    parser.add_argument('--with-labels', action='store_true',
                        help='write class names on the overlays')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in mmseg tools')
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> List[Path]:
    for what, path in (('config', args.config), ('checkpoint', args.checkpoint)):
        if not Path(path).is_file():
            raise UserError(f'{what} {path!r} does not exist')
    images = expand_images(args.images)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    keys = prepare_keys(cfg, args.condition, args.key, args.key_env)
    if (args.key or args.key_env) and not keys:
        why = ('the config has no keyed component' if args.condition == 'correct' else
               f'--condition {args.condition} runs without the correct key')
        print(f'infer.py: warning: {why}; the key is not used', file=sys.stderr)
    if args.condition == 'correct':
        note = check_checkpoint_key(args.checkpoint, keys)
        if note:
            print(f'infer.py: warning: {note}', file=sys.stderr)
    if args.condition == 'incorrect':
        condition = make_conditions(correct=False, plain=False, incorrect=1, seed=args.seed)[0]
    else:
        condition = KeyCondition(args.condition)
    written = infer(images, cfg, args.checkpoint, Path(args.out), condition, args.device,
                    args.opacity, args.with_labels)
    print(f'{args.condition}: wrote {len(written)} palette PNGs to {Path(args.out) / "pred"} '
          f'and overlays to {Path(args.out) / "vis"}')
    return written


def main(argv: Optional[Sequence[str]] = None) -> int:
    args = parse_args(argv)
    try:
        run(args)
    except UserError as err:
        print(f'infer.py: error: {err}', file=sys.stderr)
        return 1
    return 0


if __name__ == '__main__':
    sys.exit(main())
