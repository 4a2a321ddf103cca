"""Datasets (mmseg ``DATASETS``): the embedded synthetic VOC-layout dataset (and its
depth variant in mmseg's NYU layout) and the Stanford Background Dataset (real
photographs, prepared by ``tools/prepare_stanford_background.py``)."""
from .stanford_background import StanfordBackgroundDataset, prepare_stanford_background
from .synthetic import CLASSES, PALETTE, SyntheticVOCDataset, make_synthetic_voc
from .synthetic_depth import make_synthetic_nyu

__all__ = ['CLASSES', 'PALETTE', 'SyntheticVOCDataset', 'make_synthetic_voc', 'make_synthetic_nyu',
           'StanfordBackgroundDataset', 'prepare_stanford_background']
