"""Put images side by side with a label above each, e.g. one image under several key conditions.

Usage:
    python tools/side_by_side.py A.png B.png C.png --labels "correct key" plain "incorrect key"
        --out figure.png [--scale 4]
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Optional, Sequence

from PIL import Image, ImageDraw, ImageFont

LABEL_HEIGHT = 28
GAP = 8


def side_by_side(images: Sequence[Path], labels: Sequence[str], out: Path,
                 scale: int = 4) -> Path:
    """Scale each image by ``scale`` (nearest neighbour, so label maps stay crisp), put them
    in a row on a white canvas with ``labels`` above, and save to ``out``."""
    if len(images) != len(labels):
        raise ValueError(f'{len(images)} images but {len(labels)} labels')
    panels = [Image.open(p).convert('RGB') for p in images]
    panels = [p.resize((p.width * scale, p.height * scale), Image.NEAREST) for p in panels]
    width = sum(p.width for p in panels) + GAP * (len(panels) + 1)
    height = max(p.height for p in panels) + LABEL_HEIGHT + GAP
    canvas = Image.new('RGB', (width, height), 'white')
    draw = ImageDraw.Draw(canvas)
    font = ImageFont.load_default(size=16)
    x = GAP
    for panel, label in zip(panels, labels):
        text_width = draw.textlength(label, font=font)
        draw.text((x + (panel.width - text_width) / 2, 6), label, fill='black', font=font)
        canvas.paste(panel, (x, LABEL_HEIGHT))
        x += panel.width + GAP
    out.parent.mkdir(parents=True, exist_ok=True)
    canvas.save(out, optimize=True)
    return out


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument('images', nargs='+')
    parser.add_argument('--labels', nargs='+', required=True)
    parser.add_argument('--out', required=True)
    parser.add_argument('--scale', type=int, default=4)
    args = parser.parse_args(argv)
    try:
        out = side_by_side([Path(p) for p in args.images], args.labels, Path(args.out),
                           args.scale)
    except (OSError, ValueError) as err:
        print(f'side_by_side.py: error: {err}', file=sys.stderr)
        return 1
    print(f'wrote {out}')
    return 0


if __name__ == '__main__':
    sys.exit(main())
