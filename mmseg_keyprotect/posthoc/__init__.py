"""Protect a model that is already trained: key-transformed weights, no training.

* :mod:`.trace`: record the torch operations of one forward pass;
* :mod:`.channels`: follow keyed channel permutations through a recorded pass
  and compute the weights that absorb them;
* :mod:`.absorb`: absorbed feature permutations for a segmentor (checked exact);
* :mod:`.segmentor`: run every head of a segmentor on a random batch.
"""
from .absorb import Absorbed, absorb_permutations, describe_absorbed, max_output_difference
from .channels import PointRefused

__all__ = ['Absorbed', 'absorb_permutations', 'describe_absorbed', 'max_output_difference',
           'PointRefused']
