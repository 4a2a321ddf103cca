"""Index label maps as palette PNGs (pixel value = class index), as mmseg reads them."""
from __future__ import annotations

import io
from typing import Sequence

import numpy as np
from PIL import Image

__all__ = ['encode_label_png']


def encode_label_png(label: np.ndarray, palette: Sequence[Sequence[int]], ignore_index: int,
                     ignore_colour: Sequence[int]) -> bytes:
    """PNG bytes of an ``(H, W)`` uint8 label map, coloured by ``palette`` for viewing.

    The stored pixel values are the class indices (mmseg's ``LoadAnnotations``
    reads them unchanged); the palette only colours them in image viewers,
    ``ignore_index`` in ``ignore_colour``.
    """
    colours = np.zeros((256, 3), dtype=np.uint8)
    colours[:len(palette)] = np.asarray(palette, dtype=np.uint8)
    colours[ignore_index] = ignore_colour
    buffer = io.BytesIO()
    png = Image.frombytes('P', (label.shape[1], label.shape[0]),
                          np.ascontiguousarray(label, dtype=np.uint8).tobytes())
    png.putpalette(colours.tobytes())
    png.save(buffer, format='PNG', optimize=False)
    return buffer.getvalue()
