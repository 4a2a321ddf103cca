"""Model side: keyed channel permutations and wrappers (mmseg ``MODELS``)."""
from .auto_points import PRESETS, resolve_points, trace_segmentor
from .batched_ciphers import BatchedBlockCipher
from .block_unscramble import BlockUnscramble, attach_block_unscramble
from .data_preprocessor import BlockCipherSegDataPreProcessor
from .permutation import ChannelPermutation, channel_permutation_index
from .points import PointPermutation, PointSpec, attach_permutations
from .protected import (ChannelPermutationNeck, KeyProtectedCascadeEncoderDecoder,
                        KeyProtectedDepthEstimator, KeyProtectedEncoderDecoder, KeyProtectedMultimodalEncoderDecoder,
                        KeyProtectedSegmentorMixin, build_key_protected_backbone,
                        build_key_protected_head)

__all__ = [
    'PRESETS', 'resolve_points', 'trace_segmentor', 'BatchedBlockCipher', 'BlockUnscramble',
    'attach_block_unscramble',
    'BlockCipherSegDataPreProcessor',
    'ChannelPermutation', 'channel_permutation_index', 'PointSpec', 'PointPermutation',
    'attach_permutations', 'KeyProtectedSegmentorMixin', 'KeyProtectedEncoderDecoder',
    'KeyProtectedCascadeEncoderDecoder', 'KeyProtectedMultimodalEncoderDecoder',
    'KeyProtectedDepthEstimator', 'build_key_protected_backbone',
    'build_key_protected_head', 'ChannelPermutationNeck'
]
