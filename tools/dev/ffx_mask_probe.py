"""Does a model trained on paper-mode FFX images need its key's mask, or any mask?

In paper 1's FFX mode (``BlockFFX(mode='paper')``) the password is fixed and the
key only chooses which half of each block's values go through the lookup; the
same choice is repeated in every block. On Stanford Background a wrong key
leaves the M=8 and M=16 models far above the floor (docs/stanford_background.md).
This probe tests each trained FFX row of ``tools/reproduce.py`` (seed 0) on the
143 test images encrypted three ways:

* ``key``: the model's own key (the table's correct condition);
* ``other key``: another key's mask, tiled as the cipher tiles it;
* ``mask per block``: every block gets its own random mask of the same density,
  so there is no repeated pattern for the model to have learned.

A model that scores about as well with a mask per block as with another key
reads FFX images under *any* mask of that density: the key is then not what
keeps it from working. Writes ``OUT/ffx_mask_probe.{json,md}`` (docs/stanford_background/
holds a copy of the run the docs quote).

Usage:
    python tools/dev/ffx_mask_probe.py --data data/stanford_background \
        --out work_dirs/stanford_background --draws 5
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Sequence

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(REPO), str(REPO / 'tools')]

from mmseg_keyprotect.apis import init_protected_model  # noqa: E402
from mmseg_keyprotect.evaluation.metrics import image_miou, intersect_and_union  # noqa: E402
from mmseg_keyprotect.keys import SecretKey  # noqa: E402
from mmseg_keyprotect.reproduction import ROWS, run_dir  # noqa: E402
from mmseg_keyprotect.transforms.block_cipher import BlockFFX  # noqa: E402
from mmseg_keyprotect.transforms.blocks import from_blocks  # noqa: E402

from demo import machine  # noqa: E402

MASKS = ('key', 'other key', 'mask per block')


def mask_per_block(shape: Sequence[int], block_size: int, seed: int) -> np.ndarray:
    """A boolean ``(H, W, C)`` mask with exactly half of every block's values True,
    drawn independently for every block."""
    h, w, c = shape
    n = block_size * block_size * c
    ranks = np.random.default_rng(seed).random((h // block_size, w // block_size, n))
    per_block = ranks.argsort(-1).argsort(-1) < n // 2
    return np.ascontiguousarray(from_blocks(per_block, tuple(shape), block_size))


def encrypt_with_mask(table: np.ndarray, img: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """FFX with ``table`` (a paper-mode cipher's lookup, the same for every key) applied
    where ``mask`` is True."""
    index = img.reshape(-1).astype(np.uint16) + mask.reshape(-1).astype(np.uint16) * 256
    return np.take(table, index).reshape(img.shape)


def score(model, items: List[Dict], encrypt: Callable[[np.ndarray, int], np.ndarray],
          num_classes: int) -> Dict[str, float]:
    """Pooled and per-image mIoU (percent) of ``model`` on ``items`` encrypted by ``encrypt``."""
    inter = torch.zeros(num_classes)
    union = torch.zeros(num_classes)
    per_image = []
    for i, item in enumerate(items):
        img = item['inputs'].permute(1, 2, 0).numpy()
        x = torch.from_numpy(encrypt(img, i)).permute(2, 0, 1).contiguous()
        with torch.no_grad():
            out = model.test_step(dict(inputs=[x], data_samples=[item['data_samples']]))[0]
        pred = out.pred_sem_seg.data[0].long()
        gt = item['data_samples'].gt_sem_seg.data[0].long()
        area_i, area_u, _, _ = intersect_and_union(pred, gt, num_classes, 255)
        inter += area_i
        union += area_u
        value = image_miou(pred, gt, num_classes, 255)
        if value == value:
            per_image.append(value)
    present = union > 0
    return {'mIoU': 100 * float((inter[present] / union[present]).mean()),
            'mIoU_per_image': 100 * statistics.fmean(per_image)}


def probe_row(row, args) -> Dict:
    """Every mask of one FFX row: the key once, the others ``args.draws`` times."""
    from mmseg.registry import DATASETS
    work_dir = run_dir(args.out, row, 0)
    checkpoint = sorted(work_dir.glob('best_*.pth'))[-1]
    options = {'test_dataloader.dataset.data_root': args.data}
    model = init_protected_model(row.config, str(checkpoint), key=str(args.out / 'owner.key'),
                                 cfg_options=options).eval()
    cfg = model.cfg
    pipeline = [t for t in cfg.test_dataloader.dataset.pipeline if t['type'] != 'BlockFFX']
    cipher_cfg = next(t for t in cfg.test_dataloader.dataset.pipeline if t['type'] == 'BlockFFX')
    if cipher_cfg.get('mode') != 'paper':
        raise SystemExit(f'ffx_mask_probe.py: error: {row.config}: not paper-mode FFX')
    key = SecretKey.from_file(args.out / 'owner.key')
    cipher = BlockFFX(block_size=cipher_cfg['block_size'], key=key, mode='paper')
    dataset = DATASETS.build({**cfg.test_dataloader.dataset, 'pipeline': pipeline})
    items = [dataset[i] for i in range(len(dataset))]
    classes = len(dataset.metainfo['classes'])
    m = cipher.block_size
    lookup = cipher.tables(key, items[0]['inputs'].permute(1, 2, 0).shape)[0]
    results = {'key': [score(model, items, lambda img, i: cipher.encrypt(img, key), classes)]}
    results['other key'] = []
    results['mask per block'] = []
    for draw in range(args.draws):
        other = SecretKey.generate()
        results['other key'].append(
            score(model, items, lambda img, i: cipher.encrypt(img, other), classes))
        results['mask per block'].append(score(
            model, items, lambda img, i: encrypt_with_mask(
                lookup, img, mask_per_block(img.shape, m, 1000 * draw + i)), classes))
    return {'config': row.config, 'checkpoint': checkpoint.name, 'block_size': m,
            'scores': results}


def table(rows: List[Dict]) -> str:
    """Markdown: per-image / pooled mIoU, mean ± std over the draws, for every mask."""
    def cell(scores: List[Dict[str, float]]) -> str:
        parts = []
        for metric in ('mIoU_per_image', 'mIoU'):
            values = [s[metric] for s in scores]
            spread = f' ± {statistics.stdev(values):.1f}' if len(values) > 1 else ''
            parts.append(f'{statistics.fmean(values):.1f}{spread}')
        return ' / '.join(parts)
    lines = ['| FFX row (seed 0) | ' + ' | '.join(MASKS) + ' |',
             '|---|' + '---:|' * len(MASKS)]
    for r in rows:
        lines.append(f"| M={r['block_size']} | " +
                     ' | '.join(cell(r['scores'][m]) for m in MASKS) + ' |')
    return '\n'.join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('--data', default='data/stanford_background')
    parser.add_argument('--out', type=Path, default=Path('work_dirs/stanford_background'))
    parser.add_argument('--draws', type=int, default=5,
                        help='other keys and masks per block to draw (each a pass)')
    args = parser.parse_args(argv)
    torch.manual_seed(0)
    start = time.time()
    rows = [probe_row(r, args) for r in ROWS if '_ffx-b' in r.config]
    report = {'run': {**machine(), 'date': time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime()),
                      'seconds': round(time.time() - start), 'draws': args.draws},
              'rows': rows}
    (args.out / 'ffx_mask_probe.json').write_text(json.dumps(report, indent=1))
    text = (f"tools/dev/ffx_mask_probe.py, {report['run']['date']}, "
            f"{report['run'].get('processor')}: mIoU per image / pooled on the 143 test images; "
            f'other key and mask per block: mean ± std over {args.draws} draws.\n\n'
            + table(rows) + '\n')
    (args.out / 'ffx_mask_probe.md').write_text(text)
    print(text)


if __name__ == '__main__':
    main()
