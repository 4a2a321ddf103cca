"""The key-material scanner of ``tests/e2e/test_no_key_leaks.py`` is not vacuous.

What it looks for (the key in raw, hex and base64 form, and what each demo
protection derives from it as raw integers) and where (every file, every zip
member, every decoded image); the e2e test scans real work_dirs with it.
"""
from __future__ import annotations

import base64
import zipfile
from pathlib import Path
from typing import Dict, Iterator, Tuple

import cv2
import numpy as np
import torch

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models.permutation import channel_permutation_index
from mmseg_keyprotect.transforms.blocks import gather_index

SEED = 7361  # the seed of fcn_r18-d8_perm-m6-seedkey_demo.py
# Channel counts of the demo model's six points (half-width ResNetV1c-18, FCN head).
SIX_POINTS = {'backbone.layer1:input': 32, 'backbone.layer1:output': 32,
              'backbone.layer2:output': 64, 'backbone.layer3:output': 128,
              'backbone.layer4:output': 256, 'decode_head.conv_seg:input': 64}


def secret_forms(kind: str, key: SecretKey) -> Dict[str, bytes]:
    """The key in raw/hex/base64 form and, raw, what ``kind`` derives from it."""
    raw = bytes.fromhex(key.export_hex())
    forms = {
        'raw key': raw,
        'hex key': key.export_hex().encode(),
        'HEX key': key.export_hex().upper().encode(),
        'base64 key': base64.b64encode(raw).rstrip(b'='),
        'urlsafe base64 key': base64.urlsafe_b64encode(raw).rstrip(b'='),
    }
    if kind == 'shf-b2':
        perm = key.permutation('shf/block=2/channels=3', 2 * 2 * 3)
        index = gather_index(perm, (64, 64, 3), 2)
        derived = {'block permutation': perm, 'gather index': index[:4096]}
    elif kind in ('perm-m6', 'perm-m6-seedkey'):
        derived = {'channel permutation': channel_permutation_index(
            key, 'decode_head.conv_seg:input', 64).numpy()}
    else:
        derived = {f'channel permutation at {point}': channel_permutation_index(
            key, point, channels).numpy() for point, channels in SIX_POINTS.items()}
    if kind == 'perm-m6-seedkey':  # the seed is the key: as a config, a log or JSON writes it
        forms.update({f'seed as {text}': text.encode() for text in (
            f'seed={SEED}', f"'seed': {SEED}", f'"seed": {SEED}', f'seed = {SEED}')})
    for name, values in derived.items():
        for dtype in ('<i8', '<i4', '<i2'):
            forms[f'{name} as {dtype}'] = values.astype(dtype).tobytes()
        if values.max() < 256:
            forms[f'{name} as uint8'] = values.astype(np.uint8).tobytes()
    return forms


def blobs(root: Path) -> Iterator[Tuple[str, bytes]]:
    """(name, bytes) of every file, every zip member and every decoded image under ``root``."""
    for path in sorted(p for p in root.rglob('*') if p.is_file()):
        data = path.read_bytes()
        yield str(path.relative_to(root)), data
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                for member in archive.namelist():
                    yield f'{path.name}:{member}', archive.read(member)
        if path.suffix == '.png':
            yield f'{path.name}:pixels', cv2.imread(str(path), cv2.IMREAD_UNCHANGED).tobytes()


def test_scanner_finds_planted_material(tmp_path, key):
    """The scan is not vacuous: material planted in a checkpoint member or a log is found."""
    forms = secret_forms('perm-m6', key)
    torch.save({'x': torch.from_numpy(np.frombuffer(forms['channel permutation as <i8'],
                                                     '<i8').copy())}, tmp_path / 'a.pth')
    (tmp_path / 'b.log').write_text(f'oops {key.export_hex().upper()} key=dict(seed={SEED})')
    forms.update(secret_forms('perm-m6-seedkey', key))
    hits = {form for _, data in blobs(tmp_path) for form, needle in forms.items()
            if needle in data}
    assert {'channel permutation as <i8', 'HEX key', f'seed as seed={SEED}'} <= hits
