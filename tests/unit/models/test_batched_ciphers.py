"""BatchedBlockCipher: the pipeline block ciphers on (N, C, H, W) torch batches."""
from __future__ import annotations

import pickle

import numpy as np
import pytest
import torch
from mmseg.registry import TRANSFORMS

from mmseg_keyprotect.models import BatchedBlockCipher
from mmseg_keyprotect.models.batched_ciphers import hwc_to_chw_index
from mmseg_keyprotect.transforms.block_cipher import BlockCipher
from mmseg_keyprotect.transforms.blocks import gather_index

CIPHERS = ['BlockShuffle', 'BlockNegPos', 'BlockFFX']

def images(n: int = 5, shape=(16, 24, 3), seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, *shape), dtype=np.uint8)


def packed(imgs) -> list:
    """What PackSegInputs hands the preprocessor: (C, H, W) tensors."""
    return [torch.from_numpy(np.ascontiguousarray(np.asarray(i).transpose(2, 0, 1)))
            for i in imgs]


@pytest.mark.parametrize('block_size', [1, 2, 4, 8])
def test_hwc_to_chw_index_matches_a_transpose(block_size):
    shape = (8, 16, 3)
    perm = np.random.default_rng(block_size).permutation(block_size**2 * 3)
    index = gather_index(perm, shape, block_size)
    img = np.arange(np.prod(shape)).reshape(shape)
    expected = img.reshape(-1)[index].reshape(shape).transpose(2, 0, 1).reshape(-1)
    chw = img.transpose(2, 0, 1).reshape(-1)
    assert np.array_equal(chw[hwc_to_chw_index(index, shape)], expected)


@pytest.mark.parametrize('name', CIPHERS)
@pytest.mark.parametrize('block_size', [2, 4, 8])
def test_batched_cipher_equals_the_pipeline_transform(name, block_size, key):
    transform = TRANSFORMS.build(dict(type=name, block_size=block_size, key=key))
    imgs = images()
    expected = np.stack([transform(dict(img=i.copy()))['img'] for i in imgs])
    out = BatchedBlockCipher(transform).encrypt(torch.stack(packed(imgs)), key)
    assert out.dtype == torch.from_numpy(expected).dtype
    got = out.numpy().transpose(0, 2, 3, 1)
    if name == 'BlockFFX':
        np.testing.assert_allclose(got, expected, rtol=0, atol=1e-4)
    else:
        assert np.array_equal(got, expected)  # bit-identical


@pytest.mark.parametrize('mode', ['keyed', 'paper'])
def test_batched_ffx_is_bit_identical_in_both_modes(mode, key, other_key):
    transform = TRANSFORMS.build(dict(type='BlockFFX', block_size=4, key=key, mode=mode))
    imgs = images()
    batched = BatchedBlockCipher(transform)
    for k in (key, other_key):
        expected = np.stack([transform.encrypt(i, k) for i in imgs])
        got = batched.encrypt(torch.stack(packed(imgs)), k).numpy().transpose(0, 2, 3, 1)
        assert np.array_equal(got, expected)


@pytest.mark.parametrize('name', ['BlockShuffle', 'BlockNegPos'])
def test_float_batches_equal_the_pipeline_transform(name, key):
    transform = TRANSFORMS.build(dict(type=name, block_size=4, key=key))
    imgs = images().astype(np.float32) * np.float32(0.75)
    expected = np.stack([transform.encrypt(i) for i in imgs])
    out = BatchedBlockCipher(transform).encrypt(torch.stack(packed(imgs)), key)
    assert np.array_equal(out.numpy().transpose(0, 2, 3, 1), expected)



def test_batches_are_checked_like_images(key):
    batched = BatchedBlockCipher(TRANSFORMS.build(dict(type='BlockShuffle', block_size=4,
                                                       key=key, num_channels=3)))
    assert batched.check_batch(torch.zeros(2, 3, 8, 12, dtype=torch.uint8)) == (8, 12, 3)
    with pytest.raises(ValueError, match=r'expected an \(N, C, H, W\) tensor, got \(3, 8, 8\)'):
        batched.check_batch(torch.zeros(3, 8, 8, dtype=torch.uint8))
    with pytest.raises(ValueError, match=r'\(N, C, H, W\)=\(1, 3, 6, 8\)'):
        batched.encrypt(torch.zeros(1, 3, 6, 8, dtype=torch.uint8), key)
    with pytest.raises(ValueError, match='4 channel.*num_channels=3'):
        batched.encrypt(torch.zeros(1, 4, 8, 8, dtype=torch.uint8), key)
    with pytest.raises(ValueError, match='unsupported dtype torch.int32'):
        batched.encrypt(torch.zeros(1, 3, 8, 8, dtype=torch.int32), key)
    with pytest.raises(ValueError, match=r'values in \[0, 300\]; expected 0..255'):
        batched.encrypt(torch.full((1, 3, 8, 8), 300.0).clamp(0, 300) *
                        (torch.arange(8.0) > 0), key)


def test_a_cipher_without_a_torch_kernel_is_refused(key):
    class Mirror(BlockCipher):
        cipher_name = 'mirror'

    with pytest.raises(TypeError, match='no batched torch kernel for Mirror; supported: '
                                        'BlockShuffle, BlockNegPos, BlockFFX'):
        BatchedBlockCipher(Mirror(block_size=2, key=key))


def test_tables_are_built_once_per_key_and_shape_and_not_pickled(seed_key, other_key):
    batched = BatchedBlockCipher(TRANSFORMS.build(dict(type='BlockNegPos', block_size=2,
                                                       key=seed_key)))
    x = torch.stack(packed(images(2, (4, 4, 3))))
    first = batched.device_tables(seed_key, (4, 4, 3), x.device)
    assert batched.device_tables(seed_key, (4, 4, 3), x.device) is first
    assert batched.device_tables(other_key, (4, 4, 3), x.device) is not first
    restored = pickle.loads(pickle.dumps(batched))
    assert not restored._tables  # derived data, rebuilt where it is used
    assert torch.equal(restored.encrypt(x, seed_key), batched.encrypt(x, seed_key))
