"""Tests for the block ciphers against naive per-block references."""
from __future__ import annotations

import numpy as np
import pyffx
import pytest

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.transforms import BlockFFX, BlockNegPos, BlockShuffle

CIPHERS = [BlockShuffle, BlockNegPos, BlockFFX]
# (H, W, C, M): square/non-square images, 1..4 channels, M from 1 to the full image.
SHAPES = [(8, 8, 3, 2), (12, 8, 1, 4), (16, 16, 3, 16), (4, 6, 4, 1), (16, 32, 2, 8)]


def random_image(shape, seed=0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


def naive_blockwise(img: np.ndarray, m: int, op) -> np.ndarray:
    """Apply ``op`` to each flattened (row, col, channel) block, one block at a time."""
    out = np.empty(img.shape, dtype=np.float64)
    h, w, _ = img.shape
    for i in range(0, h, m):
        for j in range(0, w, m):
            block = img[i:i + m, j:j + m, :]
            out[i:i + m, j:j + m, :] = np.asarray(op(block.reshape(-1))).reshape(block.shape)
    return out


def reference_shf(img, m, key):
    perm = key.permutation(f'shf/block={m}/channels={img.shape[2]}', m * m * img.shape[2])
    return naive_blockwise(img, m, lambda v: v[perm])


def reference_np(img, m, key):
    mask = key.mask(f'np/block={m}/channels={img.shape[2]}', m * m * img.shape[2])
    return naive_blockwise(img, m, lambda v: [255 - int(x) if s else x for x, s in zip(v, mask)])


def reference_ffx(img, m, key, password=None):
    """Per-value pyffx calls, no lookup table: the slow, obviously right version."""
    mask = key.mask(f'ffx/block={m}/channels={img.shape[2]}', m * m * img.shape[2])
    if password is None:
        password = key.derive_bytes('ffx/password', 16).hex()
    cipher = pyffx.Integer(password.encode(), length=3)
    lookup_max = max(cipher.encrypt(v) for v in range(256))
    enc = naive_blockwise(img, m, lambda v: [cipher.encrypt(int(x)) if s else int(x)
                                             for x, s in zip(v, mask)])
    return enc / lookup_max * 255.0


@pytest.mark.parametrize('h, w, c, m', SHAPES)
def test_shuffle_matches_naive_reference(h, w, c, m, key):
    img = random_image((h, w, c))
    out = BlockShuffle(block_size=m, key=key)(dict(img=img.copy()))['img']
    assert out.dtype == np.uint8 and out.shape == img.shape
    np.testing.assert_array_equal(out, reference_shf(img, m, key))
    if m * m * c > 1:
        assert not np.array_equal(out, img)


@pytest.mark.parametrize('h, w, c, m', SHAPES)
def test_negpos_matches_naive_reference(h, w, c, m, key):
    img = random_image((h, w, c))
    out = BlockNegPos(block_size=m, key=key)(dict(img=img.copy()))['img']
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, reference_np(img, m, key))
    changed = (out != img).mean()
    assert 0.3 < changed <= 0.5 or m * m * c < 4  # half of the positions are inverted


@pytest.mark.parametrize('h, w, c, m', SHAPES[:3])
def test_ffx_matches_naive_per_value_pyffx(h, w, c, m, key):
    img = random_image((h, w, c))
    out = BlockFFX(block_size=m, key=key)(dict(img=img.copy()))['img']
    assert out.dtype == np.float32 and out.shape == img.shape
    assert 0.0 <= out.min() and out.max() <= 255.0 + 1e-3
    np.testing.assert_allclose(out, reference_ffx(img, m, key), rtol=1e-6, atol=1e-4)


def paper_ffx(img, m, key, password='password'):
    """Paper 1's FFX, written from its text: a 3-digit FFX with a fixed password encrypts
    the values of the block positions that the key chooses (half of them), then every
    value of the image is divided by the maximum value the encryption can give."""
    positions = np.flatnonzero(key.mask(f'ffx/block={m}/channels={img.shape[2]}',
                                        m * m * img.shape[2]))
    cipher = pyffx.Integer(password.encode(), length=3)
    maximum = max(cipher.encrypt(v) for v in range(256))
    out = np.empty(img.shape, dtype=np.float64)
    for i in range(0, img.shape[0], m):
        for j in range(0, img.shape[1], m):
            block = img[i:i + m, j:j + m].reshape(-1).astype(np.int64)
            block[positions] = [cipher.encrypt(int(v)) for v in block[positions]]
            out[i:i + m, j:j + m] = block.reshape(m, m, -1)
    return out / maximum


@pytest.mark.parametrize('h, w, c, m', SHAPES[:3])
def test_ffx_paper_mode_matches_paper_1(h, w, c, m, key, other_key):
    img = random_image((h, w, c))
    cipher = BlockFFX(block_size=m, key=key, mode='paper')
    out = cipher(dict(img=img.copy()))['img']
    # ours is the paper's value times 255, to stay in mmseg's 0..255 input range
    np.testing.assert_allclose(out / 255.0, paper_ffx(img, m, key), rtol=1e-6, atol=1e-6)
    # the password is fixed: a wrong key only moves the encrypted positions, so the
    # positions both keys encrypt (and those neither does) get the same values
    wrong = cipher.encrypt(img, other_key)
    n = m * m * c
    both = (key.mask(f'ffx/block={m}/channels={c}', n)
            == other_key.mask(f'ffx/block={m}/channels={c}', n))
    same = np.broadcast_to(both.reshape(m, m, c), (h // m, w // m, m, m, c))
    same = same.transpose(0, 2, 1, 3, 4).reshape(h, w, c)
    np.testing.assert_array_equal(out[same], wrong[same])
    assert not np.array_equal(out, wrong)


def test_ffx_keyed_mode_derives_the_password(key, other_key):
    img = np.arange(256, dtype=np.uint8).reshape(16, 16, 1)
    keyed = BlockFFX(block_size=16, key=key, num_channels=1)
    paper = BlockFFX(block_size=16, key=key, num_channels=1, mode='paper')
    # same positions, different lookup
    assert not np.array_equal(keyed.encrypt(img), paper.encrypt(img))
    np.testing.assert_allclose(paper.encrypt(img, key), paper_ffx(img, 16, key) * 255,
                               rtol=1e-6)
    custom = BlockFFX(block_size=16, key=key, num_channels=1, mode='paper', password='other')
    np.testing.assert_allclose(custom.encrypt(img), paper_ffx(img, 16, key, 'other') * 255,
                               rtol=1e-6)
    assert "mode='paper'" in repr(paper) and 'other' not in repr(custom)


@pytest.mark.parametrize('kwargs, match', [
    (dict(mode='fixed'), 'mode must be one of'),
    (dict(password='password'), "mode='paper'"),
    (dict(mode='paper', password=''), 'non-empty string'),
])
def test_ffx_mode_errors(kwargs, match, key):
    with pytest.raises(ValueError, match=match):
        BlockFFX(block_size=2, key=key, **kwargs)


def test_float_images_supported_by_shf_and_np(key):
    img = random_image((8, 8, 3)).astype(np.float32)
    shf = BlockShuffle(block_size=4, key=key)
    np.testing.assert_array_equal(shf.encrypt(img), reference_shf(img, 4, key))
    negpos = BlockNegPos(block_size=4, key=key)
    np.testing.assert_array_equal(negpos.encrypt(img), reference_np(img.astype(np.uint8), 4,
                                                                    key))


def test_grayscale_2d_image_keeps_its_shape(key):
    img = random_image((8, 8))
    for cls in CIPHERS:
        out = cls(block_size=2, key=key).encrypt(img)
        assert out.shape == (8, 8)
    np.testing.assert_array_equal(
        BlockShuffle(block_size=2, key=key).encrypt(img),
        reference_shf(img[..., None], 2, key)[..., 0])


@pytest.mark.parametrize('cls', [BlockShuffle, BlockNegPos])
def test_inverse_roundtrip(cls, key):
    img = random_image((16, 8, 3))
    cipher = cls(block_size=4, key=key)
    enc = cipher.encrypt(img)
    np.testing.assert_array_equal(cipher.decrypt(enc), img)
    wrong = cipher.decrypt(enc, SecretKey.generate())
    assert not np.array_equal(wrong, img)


@pytest.mark.parametrize('cls', CIPHERS)
def test_label_map_and_other_fields_untouched(cls, key):
    img = random_image((8, 8, 3))
    seg = np.random.default_rng(1).integers(0, 5, (8, 8), dtype=np.uint8)
    results = dict(img=img.copy(), gt_seg_map=seg.copy(), img_shape=(8, 8), extra='x')
    out = cls(block_size=2, key=key)(results)
    np.testing.assert_array_equal(out['gt_seg_map'], seg)
    assert out['img_shape'] == (8, 8) and out['extra'] == 'x'
    assert not np.array_equal(out['img'], img)


@pytest.mark.parametrize('cls', CIPHERS)
def test_same_operation_in_every_block(cls, key):
    """A tiled image stays tiled: every block gets the same keyed operation as a lone block."""
    tile = random_image((4, 4, 3))
    img = np.tile(tile, (3, 2, 1))
    cipher = cls(block_size=4, key=key)
    out = cipher.encrypt(img)
    block = cipher.encrypt(tile)
    assert not np.array_equal(block, tile)  # an identity would pass the rest
    for i in range(3):
        for j in range(2):
            np.testing.assert_array_equal(out[4 * i:4 * i + 4, 4 * j:4 * j + 4], block)


@pytest.mark.parametrize('cls', CIPHERS)
def test_different_keys_different_outputs(cls, key, other_key):
    img = random_image((16, 16, 3))
    a = cls(block_size=4, key=key).encrypt(img)
    b = cls(block_size=4, key=other_key).encrypt(img)
    assert not np.array_equal(a, b)
    # ... and the block size is part of the derivation
    c = cls(block_size=2, key=key).encrypt(img)
    assert not np.array_equal(a, c)


@pytest.mark.parametrize('cls', CIPHERS)
def test_conditions_plain_and_incorrect(cls, key, other_key):
    img = random_image((8, 8, 3))
    cipher = cls(block_size=2, key=key)
    correct = cipher(dict(img=img.copy()))['img']
    cipher.use_key(None)
    assert cipher.key_condition == 'plain'
    np.testing.assert_array_equal(cipher(dict(img=img.copy()))['img'], img)
    cipher.use_key(other_key)
    assert cipher.key_condition == 'incorrect'
    incorrect = cipher(dict(img=img.copy()))['img']
    np.testing.assert_array_equal(incorrect, cipher.encrypt(img, other_key))
    assert not np.array_equal(incorrect, correct)
    cipher.use_correct_key()
    assert cipher.key_condition == 'correct'
    np.testing.assert_array_equal(cipher(dict(img=img.copy()))['img'], correct)
    with pytest.raises(TypeError, match='SecretKey or None'):
        cipher.use_key('not a key')


@pytest.mark.parametrize('cls', CIPHERS)
@pytest.mark.parametrize('shape, m, match', [
    ((10, 8, 3), 4, r'shape \(10, 8, 3\).*4x4 blocks.*height 10 and width 8.*block_size=4'),
    ((8, 6, 3), 4, r'shape \(8, 6, 3\).*block_size=4'),
    ((8, 8, 3), 16, r'shape \(8, 8, 3\).*block_size=16'),
])
def test_block_size_must_divide_image(cls, key, shape, m, match):
    cipher = cls(block_size=m, key=key)
    with pytest.raises(ValueError, match=match):
        cipher(dict(img=random_image(shape)))


@pytest.mark.parametrize('cls', CIPHERS)
@pytest.mark.parametrize('block_size', [0, -2, 2.0, True, '4', None])
def test_bad_block_size(cls, key, block_size):
    with pytest.raises(ValueError, match='block_size must be an integer >= 1'):
        cls(block_size=block_size, key=key)


@pytest.mark.parametrize('cls, dtype', [
    (BlockShuffle, np.int32), (BlockNegPos, np.float16), (BlockNegPos, np.int64),
    (BlockFFX, np.float32), (BlockFFX, np.uint16)])
def test_unsupported_dtype(cls, dtype, key):
    img = random_image((8, 8, 3)).astype(dtype)
    with pytest.raises(ValueError, match=rf'unsupported image dtype .*shape \(8, 8, 3\).*'
                                         r'block_size=2'):
        cls(block_size=2, key=key)(dict(img=img))


def test_float_out_of_range(key):
    img = np.zeros((8, 8, 3), np.float32)
    img[1, 2, 0] = 300.5
    with pytest.raises(ValueError, match=r'values in \[0, 300\.5\].*0\.\.255'):
        BlockNegPos(block_size=2, key=key)(dict(img=img))


@pytest.mark.parametrize('cls', CIPHERS)
def test_channel_count_check(cls, key):
    cipher = cls(block_size=2, key=key, num_channels=3)
    with pytest.raises(ValueError, match=r'shape \(8, 8, 4\) has 4 channel\(s\).*num_channels=3'):
        cipher(dict(img=random_image((8, 8, 4))))
    with pytest.raises(ValueError, match=r'shape \(8, 8\) has 1 channel'):
        cipher(dict(img=random_image((8, 8))))
    with pytest.raises(ValueError, match='num_channels must be'):
        cls(block_size=2, key=key, num_channels=0)


def test_not_an_array(key):
    with pytest.raises(ValueError, match='numpy array, got list'):
        BlockShuffle(block_size=2, key=key)(dict(img=[[1, 2], [3, 4]]))


@pytest.mark.parametrize('cls', CIPHERS)
def test_missing_key_is_a_clear_error(cls):
    with pytest.raises(ValueError, match=f'{cls.__name__} needs a key'):
        cls(block_size=2)


def test_lookup_and_tables_are_built_once(key, monkeypatch):
    calls = []
    original = pyffx.Integer.encrypt
    monkeypatch.setattr(pyffx.Integer, 'encrypt',
                        lambda self, v: calls.append(v) or original(self, v))
    cipher = BlockFFX(block_size=2, key=SecretKey.generate())
    img = random_image((8, 8, 3))
    for _ in range(3):
        cipher(dict(img=img.copy()))
    assert len(calls) == 256  # one lookup table, no per-pixel calls
