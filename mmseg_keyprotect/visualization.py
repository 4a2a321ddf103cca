"""A protected model's predictions under each key condition, as a figure (Fig. 6 of paper 2).

One row per sample: the input as the model sees it under correct / plain / incorrect key,
the ground truth, and the prediction under each condition, with per-image mIoU. The
command line is ``tools/visualize_conditions.py``.
"""
from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, List, Optional, Sequence

import numpy as np
import torch
from mmengine.dataset import pseudo_collate

from .evaluation.metrics import image_miou
from .protection import KeyCondition, Protection

__all__ = ['draw_conditions', 'condition_panels', 'Panel', 'to_display', 'colorize']

#: Column titles of the three conditions, in the order of ``Protection.conditions``.
TITLES = ('correct key', 'plain', 'incorrect key')


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


@dataclass
class Panel:
    """One panel of the figure: a title, an HxWx3 uint8 RGB image and a caption."""

    title: str
    image: np.ndarray
    caption: str = ''


def condition_panels(model: Any, dataset: Any, protection: Protection,
                     conditions: Sequence[KeyCondition], index: int) -> List[Panel]:
    """The seven panels of sample ``index``: the input the model sees under each of
    the three conditions, the ground truth, and the prediction under each condition
    (captioned with its per-image mIoU)."""
    palette = dataset.metainfo['palette']
    num_classes = len(dataset.metainfo['classes'])
    inputs, predictions = [], []
    gt = None
    for cond, title in zip(conditions, TITLES):
        with protection.applied(cond), torch.no_grad():
            data = dataset[index]
            pred = model.test_step(pseudo_collate([data]))[0]
        miou = image_miou(pred.pred_sem_seg.data[0], pred.gt_sem_seg.data[0], num_classes)
        gt = pred.gt_sem_seg.data[0].numpy()
        inputs.append(Panel(f'input, {title}', to_display(data['inputs'])))
        predictions.append(Panel(f'prediction, {title}',
                                 colorize(pred.pred_sem_seg.data[0].numpy(), palette),
                                 f'mIoU {miou:.2f}'))
    return inputs + [Panel('ground truth', colorize(gt, palette))] + predictions


def draw_conditions(cfg: Any, checkpoint: Optional[str], out: Path, num_samples: int = 4,
                    seed: int = 0) -> Path:
    """Predict ``num_samples`` test images under correct / plain / incorrect and save a grid.

    The model is loaded with :func:`~mmseg_keyprotect.apis.init_protected_model`
    (the config's key, checked against the checkpoint); the incorrect key is drawn
    distinct from the correct one (``seed``).
    """
    import matplotlib.pyplot as plt
    from mmseg.registry import DATASETS

    from .apis import init_protected_model
    model = init_protected_model(cfg, checkpoint, device='cpu')
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        dataset = DATASETS.build(model.cfg.test_dataloader.dataset)
    protection = Protection.of(model, dataset)
    conditions, _ = protection.conditions(incorrect=1, seed=seed)
    rows = min(num_samples, len(dataset))
    fig, axes = plt.subplots(rows, 2 * len(TITLES) + 1, figsize=(14, 2.2 * rows),
                             squeeze=False)
    for row in range(rows):
        for ax, panel in zip(axes[row], condition_panels(model, dataset, protection,
                                                         conditions, row)):
            ax.imshow(panel.image)
            ax.set_xlabel(panel.caption)
            if row == 0:
                ax.set_title(panel.title, fontsize=9)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(', '.join(sorted({part['type'] for part in protection.describe()}))
                 or 'unprotected',
                 fontsize=10)
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=100)
    plt.close(fig)
    return out
