"""Segment image files with a protected model and write palette PNGs and overlays.

The command line is ``tools/infer.py``; the model comes from
:func:`~mmseg_keyprotect.apis.protected_inferencer` (key, fingerprint check, condition).
"""
from __future__ import annotations

import glob
from pathlib import Path
from typing import Dict, List, Sequence

import numpy as np

__all__ = ['IMAGE_SUFFIXES', 'ImageSpecError', 'expand_images', 'write_palette_png',
           'segment_images']

IMAGE_SUFFIXES = ('.jpg', '.jpeg', '.png', '.bmp', '.tif', '.tiff', '.webp')


class ImageSpecError(ValueError):
    """An image argument matches nothing, or two images would get the same output name."""


def expand_images(specs: Sequence[str]) -> List[Path]:
    """Files, directories (their images, sorted) and globs -> a list of image files.

    Raises:
        ImageSpecError: if a spec matches nothing, or two images would get the
            same output name.
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
            raise ImageSpecError(f'image {spec!r} does not exist')
        if not found:
            raise ImageSpecError(f'{spec!r} matches no image ({", ".join(IMAGE_SUFFIXES)})')
        images.extend(found)
    names: Dict[str, Path] = {}
    for image in images:
        if image.stem in names and names[image.stem] != image:
            raise ImageSpecError(f'{str(names[image.stem])!r} and {str(image)!r} would both be '
                                 f'written as {image.stem}.png; run them separately')
        names[image.stem] = image
    return list(dict.fromkeys(images))


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


def segment_images(inferencer, images: Sequence[Path], out: Path, opacity: float = 0.5,
                   with_labels: bool = False) -> List[Path]:
    """Segment ``images`` with an ``MMSegInferencer`` (its condition already applied).

    Writes ``out/pred/NAME.png`` (palette PNG) and ``out/vis/NAME.png``
    (mmseg's ``SegLocalVisualizer`` overlay) for every image.

    Returns:
        list[Path]: the palette PNGs written.
    """
    import mmcv
    from mmengine.utils import track_iter_progress

    inferencer.show_progress = False
    palette = inferencer.model.dataset_meta['palette']
    visualizer = inferencer.visualizer
    visualizer.set_dataset_meta(**inferencer.model.dataset_meta)
    visualizer.alpha = opacity
    (out / 'pred').mkdir(parents=True, exist_ok=True)
    (out / 'vis').mkdir(parents=True, exist_ok=True)
    written = []
    progress = track_iter_progress(list(images)) if len(images) > 1 else images
    for image in progress:
        sample = inferencer(str(image), return_datasamples=True)
        pred = out / 'pred' / f'{image.stem}.png'
        write_palette_png(sample.pred_sem_seg.data[0].cpu().numpy(), palette, pred)
        visualizer.add_datasample(image.stem, mmcv.imread(str(image), channel_order='rgb'),
                                  sample, draw_gt=False, draw_pred=True, with_labels=with_labels,
                                  out_file=str(out / 'vis' / f'{image.stem}.png'))
        written.append(pred)
    return written
