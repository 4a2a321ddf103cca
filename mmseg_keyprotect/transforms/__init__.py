"""Data-pipeline side: block-wise image encryption and block scrambling (mmseg ``TRANSFORMS``)."""
from .block_cipher import BlockCipher, BlockFFX, BlockNegPos, BlockShuffle
from .block_scramble import BlockScramble

__all__ = ['BlockCipher', 'BlockShuffle', 'BlockNegPos', 'BlockFFX', 'BlockScramble']
