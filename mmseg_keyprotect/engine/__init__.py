"""Engine side: the weights-only checkpoint loader."""
from .checkpoint import load_from_local_weights_only

__all__ = ['load_from_local_weights_only']
