"""The Stanford Background Dataset (Gould et al., ICCV 2009) in mmseg's layout.

715 outdoor photographs of about 320x240 pixels, eight classes (sky, tree, road,
grass, water, building, mountain, foreground object) and "unknown" (ignored).
:func:`prepare_stanford_background` turns a copy of the dataset into::

    out/
      img_dir/{train,val,test}/ID.jpg     (the original JPEG bytes)
      ann_dir/{train,val,test}/ID.png     (palette PNG, pixel = class index, 255 = unknown)
      prepared.json                       (counts, per-class pixels, label fingerprint)

The split lists are fixed and ship with the configs
(``configs/_base_/splits/stanford_background_{train,val,test}.txt``):
``test`` is the dataset's 143-image validation list (the reported split),
``val`` (checkpoint selection) is every :data:`SELECTION_EVERY`-th id of the
sorted 572-image training list, ``train`` the rest (:func:`carve_selection`).

Sources (:func:`source_folder`): the official ``iccv09Data.tar.gz``, an
extracted folder, or a git directory and commit ``GIT_DIR@COMMIT[:FOLDER]``
(folder default ``iccv09Data``). Labels come from ``labels/ID.png`` (4-bit palette
images whose "unknown" is 15) where present, else from the official
``labels/ID.regions.txt`` (integer matrices, unknown negative). A source with a
missing or unexpected file is refused (:class:`SourceError`, one line).
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import os.path as osp
import re
import shutil
import subprocess
import tarfile
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Dict, Iterator, List, Mapping, Sequence, Tuple, Union

import numpy as np
from mmseg.datasets import BaseSegDataset
from mmseg.registry import DATASETS
from PIL import Image

from .label_png import encode_label_png

__all__ = ['CLASSES', 'PALETTE', 'SPLITS', 'SourceError', 'StanfordBackgroundDataset',
           'PreparedDataset', 'carve_selection', 'read_label', 'source_folder',
           'prepare_stanford_background', 'read_split_lists']

CLASSES: Tuple[str, ...] = ('sky', 'tree', 'road', 'grass', 'water', 'building', 'mountain',
                            'foreground object')
# The colours of mmseg's tutorial on this dataset.
PALETTE: Tuple[Tuple[int, int, int], ...] = (
    (128, 128, 128), (129, 127, 38), (120, 69, 125), (53, 125, 34), (0, 11, 123),
    (118, 20, 12), (122, 81, 25), (241, 134, 51))
IGNORE_INDEX = 255
#: "unknown" in the 4-bit label PNGs (it is negative in ``regions.txt``).
PNG_UNKNOWN = 15
SPLITS: Tuple[str, ...] = ('train', 'val', 'test')
#: ``val`` (checkpoint selection) is every 8th id of the sorted official training list.
SELECTION_EVERY = 8
DEFAULT_GIT_FOLDER = 'iccv09Data'
_ID = re.compile(r'^\d{7}$')
_LABEL_FILES = ('.png', '.regions.txt', '.surfaces.txt', '.layers.txt')
_TOP_FILES = {'README', 'horizons.txt'}
_IGNORE_COLOUR = (255, 255, 255)


class SourceError(ValueError):
    """A copy of the dataset that cannot be prepared; the message is one line."""


# ----------------------------------------------------------------------- splits
def carve_selection(train_ids: Sequence[str], every: int = SELECTION_EVERY
                    ) -> Tuple[List[str], List[str]]:
    """Split the official training list into (train, val): val is every ``every``-th id.

    Ids are sorted first, so the result does not depend on the list's order; the
    ids are grouped by source collection, so the stride spreads val over them.
    """
    ids = sorted(train_ids)
    val = ids[::every]
    chosen = set(val)
    return [i for i in ids if i not in chosen], val


def read_split_lists(folder: Union[str, Path], prefix: str = 'stanford_background_'
                     ) -> Dict[str, List[str]]:
    """The fixed lists ``{split: ids}`` from ``folder/{prefix}{split}.txt``.

    Raises:
        SourceError: if a list is missing, or the lists are not disjoint.
    """
    lists = {}
    for split in SPLITS:
        path = Path(folder) / f'{prefix}{split}.txt'
        if not path.is_file():
            raise SourceError(f'split list {path} not found')
        lists[split] = path.read_text().split()
    seen: Dict[str, str] = {}
    for split, ids in lists.items():
        for i in ids:
            if i in seen:
                raise SourceError(f'id {i} is in both the {seen[i]} and the {split} lists')
            seen[i] = split
    return lists


# ----------------------------------------------------------------------- sources
def _dataset_root(folder: Path) -> Path:
    """``folder`` or its one ``iccv09Data`` sub-folder: where ``images/`` is."""
    if (folder / 'images').is_dir():
        return folder
    inner = folder / DEFAULT_GIT_FOLDER
    if (inner / 'images').is_dir():
        return inner
    raise SourceError(f'{folder} has no images/ folder (nor {DEFAULT_GIT_FOLDER}/images/): '
                      'not a copy of the Stanford Background Dataset')


def _git_archive(spec: str, into: Path) -> None:
    git_dir, _, rest = spec.rpartition('@')
    commit, _, folder = rest.partition(':')
    folder = folder or DEFAULT_GIT_FOLDER
    tree = _git(git_dir, 'ls-tree', '--name-only', f'{commit}:{folder}').decode().split()
    # Only what preparation reads: the images, the label PNGs (the official regions.txt
    # where a tree has no PNGs) and the split lists, and whatever else is at the top.
    paths = [name for name in tree if name not in ('labels', 'images')] + ['images']
    labels = _git(git_dir, 'ls-tree', '--name-only', f'{commit}:{folder}/labels').decode().split()
    paths.append(':(glob)labels/*.png' if any(n.endswith('.png') for n in labels)
                 else ':(glob)labels/*.regions.txt')
    archive = into / 'source.tar'
    archive.write_bytes(_git(git_dir, 'archive', f'{commit}:{folder}', *paths))
    _extract(archive, into / 'source')
    archive.unlink()


def _git(git_dir: str, *args: str) -> bytes:
    proc = subprocess.run(['git', f'--git-dir={git_dir}', *args], capture_output=True)
    if proc.returncode:
        detail = (proc.stderr.decode(errors='replace').strip().splitlines() or ['no output'])[-1]
        raise SourceError(f'git {args[0]} {args[-1]} in {git_dir} failed: {detail}')
    return proc.stdout


def _extract(archive: Path, into: Path) -> None:
    try:
        with tarfile.open(archive) as tar:
            tar.extractall(into, filter='data')
    except (tarfile.TarError, OSError) as err:
        raise SourceError(f'cannot extract {archive}: {err}') from None


@contextlib.contextmanager
def source_folder(source: Union[str, Path]) -> Iterator[Path]:
    """The dataset folder (the one holding ``images/``) of ``source``, while the block runs.

    Args:
        source: an extracted folder; a tarball (``iccv09Data.tar.gz``); or
            ``GIT_DIR@COMMIT[:FOLDER]``. Tarballs and git trees are extracted
            into a temporary folder, removed on exit.

    Raises:
        SourceError: if ``source`` is none of these, or cannot be read.
    """
    text = str(source)
    path = Path(text)
    if path.is_dir():
        yield _dataset_root(path)
        return
    with tempfile.TemporaryDirectory(prefix='stanford_background_') as tmp:
        if path.is_file():
            _extract(path, Path(tmp) / 'source')
        elif '@' in text and Path(text.rpartition('@')[0]).is_dir():
            _git_archive(text, Path(tmp))
        else:
            raise SourceError(f'source {text!r} is not a folder, a tarball or '
                              'GIT_DIR@COMMIT[:FOLDER]')
        yield _dataset_root(Path(tmp) / 'source')


# ----------------------------------------------------------------------- checks
def _id_and_kind(name: str, suffixes: Sequence[str]) -> Tuple[str, str]:
    for suffix in suffixes:
        if name.endswith(suffix) and _ID.match(name[:-len(suffix)]):
            return name[:-len(suffix)], suffix
    return '', ''


def _inventory(root: Path, ids: Sequence[str]) -> Dict[str, Dict[str, Path]]:
    """``{id: {'.jpg': path, '.png': path, ...}}``; refuses unexpected files.

    Raises:
        SourceError: naming the first unexpected file.
    """
    known = set(ids)
    found: Dict[str, Dict[str, Path]] = {i: {} for i in ids}
    for entry in sorted(root.iterdir()):
        if entry.name in _TOP_FILES and entry.is_file():
            continue
        if entry.name not in ('images', 'labels', 'splits') or not entry.is_dir():
            raise SourceError(f'unexpected file in the source: {entry}')
    for sub, suffixes in (('images', ('.jpg',)), ('labels', _LABEL_FILES)):
        for path in sorted((root / sub).iterdir()) if (root / sub).is_dir() else []:
            image_id, kind = _id_and_kind(path.name, suffixes)
            if image_id not in known or not path.is_file():
                raise SourceError(f'unexpected file in the source: {path} (not an image or label '
                                  'of an id in the split lists)')
            found[image_id][kind] = path
    return found


def _check_source_splits(root: Path, lists: Mapping[str, Sequence[str]]) -> None:
    """If the source has ``splits/``, it must hold the official lists the fixed ones come from."""
    folder = root / 'splits'
    if not folder.is_dir():
        return
    expected = {'train.txt': set(lists['train']) | set(lists['val']),
                'val.txt': set(lists['test'])}
    for path in sorted(folder.iterdir()):
        if path.name not in expected:
            raise SourceError(f'unexpected file in the source: {path}')
        if set(path.read_text().split()) != expected[path.name]:
            raise SourceError(f'{path} differs from the fixed split lists (configs/_base_/splits/)')


def read_label(path: Path) -> np.ndarray:
    """An ``(H, W)`` uint8 label map from a label PNG or ``regions.txt``; unknown -> 255.

    Raises:
        SourceError: if the file cannot be read or holds a value that is not a
            class index (0..7) or unknown.
    """
    try:
        if path.name.endswith('.png'):
            with Image.open(path) as png:
                if png.mode not in ('P', 'L'):
                    raise SourceError(f'{path}: a {png.mode} PNG, expected a palette (index) PNG')
                raw = np.asarray(png, dtype=np.int64)
            raw = np.where(raw == PNG_UNKNOWN, -1, raw)
        else:
            raw = np.loadtxt(path, dtype=np.int64, ndmin=2)
            raw = np.where(raw < 0, -1, raw)
    except (OSError, ValueError) as err:
        if isinstance(err, SourceError):
            raise
        raise SourceError(f'cannot read the label {path}: {err}') from None
    bad = np.unique(raw[(raw >= len(CLASSES))])
    if bad.size:
        raise SourceError(f'{path}: value(s) {bad.tolist()} are not class indices 0..'
                          f'{len(CLASSES) - 1} or unknown')
    return np.where(raw < 0, IGNORE_INDEX, raw).astype(np.uint8)


# ----------------------------------------------------------------------- preparation
@dataclass
class PreparedDataset:
    """What :func:`prepare_stanford_background` wrote (also in ``prepared.json``)."""
    out: str
    counts: Dict[str, int]
    #: sha256 over every split's ids, label shapes and label values
    label_fingerprint: str
    #: pixels of each class (and ``unknown``) per split
    class_pixels: Dict[str, Dict[str, int]] = field(default_factory=dict)


def _clear_outputs(out: Path, overwrite: bool) -> None:
    existing = [out / d for d in ('img_dir', 'ann_dir') if (out / d).exists()]
    if existing and not overwrite:
        raise SourceError(f'{existing[0]} exists; pass overwrite=True (--overwrite) to replace it')
    for folder in existing:
        shutil.rmtree(folder)


def prepare_stanford_background(source: Union[str, Path], out: Union[str, Path],
                                lists: Mapping[str, Sequence[str]],
                                overwrite: bool = False) -> PreparedDataset:
    """Write the mmseg layout of ``source`` under ``out`` for the fixed split ``lists``.

    Every source file is checked before anything is written.

    Args:
        source: see :func:`source_folder`.
        out: output folder (created).
        lists: ``{'train': ids, 'val': ids, 'test': ids}`` (:func:`read_split_lists`).
        overwrite: replace ``out/img_dir`` and ``out/ann_dir`` if they exist.

    Returns:
        PreparedDataset: counts, per-class pixel counts and the label fingerprint.

    Raises:
        SourceError: (one line) a missing or unexpected file, an unreadable or
            invalid label, a label whose size differs from its image, or an
            existing output without ``overwrite``.
    """
    out = Path(out)
    ids = [i for split in SPLITS for i in lists[split]]
    with source_folder(source) as root:
        files = _inventory(root, ids)
        _check_source_splits(root, lists)
        labels: Dict[str, np.ndarray] = {}
        for image_id in ids:
            have = files[image_id]
            if '.jpg' not in have:
                raise SourceError(f'missing file in the source: images/{image_id}.jpg')
            label_path = have.get('.png') or have.get('.regions.txt')
            if label_path is None:
                raise SourceError(f'missing file in the source: labels/{image_id}.png '
                                  f'(or labels/{image_id}.regions.txt)')
            label = read_label(label_path)
            with Image.open(have['.jpg']) as image:
                size = image.size[::-1]
            if label.shape != size:
                raise SourceError(f'{label_path}: label of {label.shape[0]}x{label.shape[1]} '
                                  f'for an image of {size[0]}x{size[1]}')
            labels[image_id] = label
        _clear_outputs(out, overwrite)
        digest = hashlib.sha256()
        class_pixels = {}
        for split in SPLITS:
            img_dir, ann_dir = out / 'img_dir' / split, out / 'ann_dir' / split
            img_dir.mkdir(parents=True)
            ann_dir.mkdir(parents=True)
            counts = np.zeros(256, dtype=np.int64)
            for image_id in sorted(lists[split]):
                label = labels[image_id]
                shutil.copyfile(files[image_id]['.jpg'], img_dir / f'{image_id}.jpg')
                (ann_dir / f'{image_id}.png').write_bytes(
                    encode_label_png(label, PALETTE, IGNORE_INDEX, _IGNORE_COLOUR))
                digest.update(f'{split}/{image_id}:{label.shape[0]}x{label.shape[1]}:'.encode())
                digest.update(label.tobytes())
                counts += np.bincount(label.ravel(), minlength=256)
            class_pixels[split] = {name: int(counts[c]) for c, name in enumerate(CLASSES)}
            class_pixels[split]['unknown'] = int(counts[IGNORE_INDEX])
    prepared = PreparedDataset(out=str(out), counts={s: len(lists[s]) for s in SPLITS},
                               label_fingerprint=digest.hexdigest(), class_pixels=class_pixels)
    (out / 'prepared.json').write_text(json.dumps(asdict(prepared), indent=2) + '\n')
    return prepared


# ----------------------------------------------------------------------- dataset
@DATASETS.register_module()
class StanfordBackgroundDataset(BaseSegDataset):
    """The Stanford Background Dataset as :func:`prepare_stanford_background` writes it.

    Eight classes, no background class (``reduce_zero_label=False``), 255 ignored.

    Args:
        img_suffix (str): Defaults to ``'.jpg'``.
        seg_map_suffix (str): Defaults to ``'.png'``.
        **kwargs: passed to :class:`~mmseg.datasets.BaseSegDataset`
            (``data_root``, ``data_prefix``, ``pipeline``, ...).

    Example:
        >>> test = dict(type='StanfordBackgroundDataset', data_root='data/stanford_background',
        ...             data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test'),
        ...             pipeline=[...])
    """

    METAINFO = dict(classes=CLASSES, palette=[list(c) for c in PALETTE])

    def __init__(self, img_suffix: str = '.jpg', seg_map_suffix: str = '.png',
                 **kwargs) -> None:
        kwargs.setdefault('reduce_zero_label', False)
        kwargs.setdefault('ignore_index', IGNORE_INDEX)
        super().__init__(img_suffix=img_suffix, seg_map_suffix=seg_map_suffix, **kwargs)

    def load_data_list(self) -> List[dict]:
        """List the images, after checking that the dataset was prepared.

        Raises:
            FileNotFoundError: naming the missing folder and the command that writes it.
        """
        img_dir = self.data_prefix.get('img_path', '')
        if not self.ann_file and not osp.isdir(img_dir):
            raise FileNotFoundError(
                f'{img_dir!r} not found: prepare the dataset with `python '
                'tools/prepare_stanford_background.py SOURCE --out '
                f'{self.data_root or "DATA_ROOT"}`')
        return super().load_data_list()
