"""Datasets (mmseg ``DATASETS``): the embedded synthetic VOC-layout dataset."""
from .synthetic import CLASSES, PALETTE, SyntheticVOCDataset, make_synthetic_voc

__all__ = ['CLASSES', 'PALETTE', 'SyntheticVOCDataset', 'make_synthetic_voc']
