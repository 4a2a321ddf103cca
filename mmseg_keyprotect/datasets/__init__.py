"""Datasets (mmseg ``DATASETS``): the embedded synthetic VOC-layout dataset and the
Stanford Background Dataset (real photographs, prepared by
``tools/prepare_stanford_background.py``)."""
from .stanford_background import StanfordBackgroundDataset, prepare_stanford_background
from .synthetic import CLASSES, PALETTE, SyntheticVOCDataset, make_synthetic_voc

__all__ = ['CLASSES', 'PALETTE', 'SyntheticVOCDataset', 'make_synthetic_voc',
           'StanfordBackgroundDataset', 'prepare_stanford_background']
