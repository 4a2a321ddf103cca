"""Data-pipeline side: block-wise image encryption (mmseg ``TRANSFORMS``)."""
from .block_cipher import BlockCipher, BlockFFX, BlockNegPos, BlockShuffle

__all__ = ['BlockCipher', 'BlockShuffle', 'BlockNegPos', 'BlockFFX']
