"""Known answers: what a fixed key derives is pinned, across numpy/torch versions.

The tests below pin what is derived to the key derivation alone (HMAC-SHA256 +
SHAKE-256 + a stable sort), not to any global RNG state. The same key across
fresh processes, dataloader workers and DDP ranks: ``tests/e2e/test_determinism.py``.
"""
from __future__ import annotations

import hashlib

import numpy as np
import pytest

from mmseg_keyprotect.models.permutation import channel_permutation_index
from mmseg_keyprotect.transforms import BlockFFX, BlockNegPos, BlockShuffle

IMAGE = (np.arange(16 * 16 * 3) % 256).astype(np.uint8).reshape(16, 16, 3)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -------------------------------------------------------------- known answers
# A change to any of these makes every model trained with an existing key unusable with it.
KNOWN_CIPHER_OUTPUTS = {
    BlockShuffle: 'b7c4d27f549fedf308f1f137e94a00e82b0ad19ba2d5f168e1a49bfa1e08e046',
    BlockNegPos: '6e7daef0b717d25db2d6ac3c3afa025be6a1a72e77fab576121be9e36af39f26',
    BlockFFX: '326c0336f322e1e233ee639cd6ee804674981f9bf4de6a333129fdc178b398cd',
}


@pytest.mark.parametrize('cls', sorted(KNOWN_CIPHER_OUTPUTS, key=lambda c: c.__name__))
def test_known_answer_cipher_output(seed_key, cls):
    out = cls(block_size=4, key=seed_key)(dict(img=IMAGE.copy()))['img']
    assert out.shape == IMAGE.shape
    assert sha(out.tobytes()) == KNOWN_CIPHER_OUTPUTS[cls]


def test_known_answer_channel_permutation(seed_key):
    # The paper's Model-6 point of FCN-R50-D8 (512 channels); small sizes are pinned in
    # tests/unit/models/test_permutation.py::test_index_is_pinned_for_a_fixed_key.
    index = channel_permutation_index(seed_key, 'decode_head.conv_seg:input', 512)
    assert index[:8].tolist() == [422, 349, 40, 22, 365, 280, 488, 262]
    assert sha(index.numpy().astype('<i8').tobytes()) == \
        'a71479bdef703a2e5c2b0718b65aad579c0e70b63e0569b4d2ae55711b37469e'
