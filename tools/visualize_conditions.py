"""Draw a protected model's predictions under each key condition (like Fig. 6 of paper 2).

One row per sample: the input as the model sees it under correct / plain / incorrect key,
the ground truth, and the prediction under each condition, with per-image mIoU.

Usage:
    python tools/visualize_conditions.py CONFIG [CHECKPOINT] --out fig.png [--num-samples 4]
"""
from __future__ import annotations

import argparse
import warnings
from pathlib import Path
from typing import List, Optional, Sequence

import matplotlib

matplotlib.use('Agg')
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from mmengine.config import Config, DictAction  # noqa: E402
from mmengine.dataset import pseudo_collate  # noqa: E402
from mmengine.registry import init_default_scope  # noqa: E402

import mmseg_keyprotect  # noqa: E402,F401
from mmseg_keyprotect.engine import (KeyCondition, find_keyed_components,  # noqa: E402
                                     key_condition, make_conditions)


def image_mean_iou(pred: np.ndarray, gt: np.ndarray, num_classes: int,
                   ignore_index: int = 255) -> float:
    """mIoU of one prediction over the classes present in the prediction or ground truth."""
    valid = gt != ignore_index
    ious = []
    for c in range(num_classes):
        p, g = (pred == c) & valid, (gt == c) & valid
        union = (p | g).sum()
        if union:
            ious.append((p & g).sum() / union)
    return float(np.mean(ious)) if ious else float('nan')


def to_display(inputs: torch.Tensor) -> np.ndarray:
    """Packed (C, H, W) BGR input -> HxWx3 RGB uint8 for display (FFX floats rescaled)."""
    img = inputs.float().numpy().transpose(1, 2, 0)
    if img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    img = img[..., :3][..., ::-1]
    return np.clip(img, 0, 255).astype(np.uint8)


def colorize(label: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    lut = np.zeros((256, 3), np.uint8)
    lut[:len(palette)] = np.asarray(palette, np.uint8)
    return lut[label]


def draw(cfg: Config, checkpoint: Optional[str], out: Path, num_samples: int = 4,
         seed: int = 0) -> Path:
    """Predict ``num_samples`` test images under correct / plain / incorrect and save a grid."""
    from mmseg.apis import init_model
    from mmseg.registry import DATASETS

    init_default_scope(cfg.get('default_scope', 'mmseg'))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = init_model(cfg, checkpoint, device='cpu')
        dataset = DATASETS.build(cfg.test_dataloader.dataset)
    conditions: List[KeyCondition] = make_conditions(incorrect=1, seed=seed)
    titles = ['correct key', 'plain', 'incorrect key']
    palette = dataset.metainfo['palette']
    num_classes = len(dataset.metainfo['classes'])
    rows = min(num_samples, len(dataset))
    fig, axes = plt.subplots(rows, 7, figsize=(14, 2.2 * rows), squeeze=False)
    for row in range(rows):
        gt = None
        for col, (cond, title) in enumerate(zip(conditions, titles)):
            with key_condition(cond, model, dataset), torch.no_grad():
                data = dataset[row]
                pred = model.test_step(pseudo_collate([data]))[0]
            gt = pred.gt_sem_seg.data[0].numpy()
            label = pred.pred_sem_seg.data[0].numpy()
            axes[row, col].imshow(to_display(data['inputs']))
            axes[row, 4 + col].imshow(colorize(label, palette))
            axes[row, 4 + col].set_xlabel(f'mIoU {image_mean_iou(label, gt, num_classes):.2f}')
            if row == 0:
                axes[row, col].set_title(f'input, {title}', fontsize=9)
                axes[row, 4 + col].set_title(f'prediction, {title}', fontsize=9)
        axes[row, 3].imshow(colorize(gt, palette))
        if row == 0:
            axes[row, 3].set_title('ground truth', fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    keyed = find_keyed_components(model, dataset)
    fig.suptitle(', '.join(sorted({type(c).__name__ for c in keyed})) or 'unprotected',
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('config')
    parser.add_argument('checkpoint', nargs='?', help='checkpoint (omit for untrained weights)')
    parser.add_argument('--out', required=True, help='PNG file to write')
    parser.add_argument('--num-samples', type=int, default=4)
    parser.add_argument('--seed', type=int, default=0, help='seed of the incorrect key')
    parser.add_argument('--cfg-options', nargs='+', action=DictAction,
                        help='override config settings, as in mmseg tools')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    args = parse_args(argv)
    cfg = Config.fromfile(args.config)
    if args.cfg_options:
        cfg.merge_from_dict(args.cfg_options)
    out = draw(cfg, args.checkpoint, Path(args.out), args.num_samples, args.seed)
    print(f'wrote {out}')


if __name__ == '__main__':
    main()
