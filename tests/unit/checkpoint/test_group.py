"""Sealing without fresh buffers, opening without intermediate copies: same results, same refusals.

Kept ciphertext buffers are reused only once nothing uses them; a model's
parameters are written only after every tag is verified; a checkpoint entry
decrypted in place is encrypted back, bit for bit, when any tag fails.
"""
from __future__ import annotations

import pytest
import torch

from mmseg_keyprotect.checkpoint import (TREE_MARKER, EncryptedWeightsError, SealedGroup,
                                         open_checkpoint, open_sealed, read_header,
                                         release_seal_buffers, seal, seal_checkpoint,
                                         tensors_with_paths)
from mmseg_keyprotect.checkpoint import gcm
from mmseg_keyprotect.models.weight_encryption import describe_module, sealed_state_dict

from ..models.test_weight_encryption import WEIGHT, assert_unchanged, segmentor, weights


def same_bytes(a, b):
    """Equal bits (ciphertext read as floats holds NaNs: ``torch.equal`` would say no)."""
    return a.dtype == b.dtype and a.shape == b.shape and torch.equal(
        a.reshape(-1).view(torch.uint8), b.reshape(-1).view(torch.uint8))


def _group(key, tensors):
    sealed, header = seal(tensors, key, None, 'tree')
    return {path: t for (path, _), t in zip(tensors, sealed)}, read_header(header)


def _odd_tensors():
    return [(('strided', ), torch.arange(12.).reshape(3, 4).t()),
            (('empty', ), torch.zeros(0, 3)),
            (('flags', ), torch.tensor([True, False, True])),
            (('count', ), torch.tensor(7)),
            (('double', ), torch.randn(5, dtype=torch.float64)),
            (('big', ), torch.randn(300_000))]


@pytest.mark.parametrize('in_place', [False, True])
def test_odd_tensors_round_trip(key, in_place):
    tensors = _odd_tensors()
    sealed, header = _group(key, tensors)
    opened = open_sealed(header, sealed, key, None, 'x', into=sealed if in_place else None)
    for path, tensor in tensors:
        assert opened[path].dtype == tensor.dtype and torch.equal(opened[path], tensor)
    if in_place:  # the ciphertext's memory holds the plaintext now
        assert opened[('big', )].data_ptr() == sealed[('big', )].data_ptr()
        assert torch.equal(sealed[('big', )], tensors[-1][1])


def test_kept_buffers_are_reused_only_when_free(key):
    tensors = [(('w', ), torch.randn(1 << 19))]  # 2 MiB: kept between seals
    first, _ = seal(tensors, key, None, 'tree')
    snapshot = first[0].clone()
    second, _ = seal(tensors, key, None, 'tree')
    assert second[0].data_ptr() != first[0].data_ptr()  # the first is still in use
    assert same_bytes(first[0], snapshot)
    address = first[0].data_ptr()
    del first
    third, _ = seal(tensors, key, None, 'tree')
    assert third[0].data_ptr() == address  # free again: reused, not faulted in anew
    assert not same_bytes(third[0], snapshot)  # a new salt: new ciphertext
    release_seal_buffers()
    assert not gcm._BUFFERS._kept
    fourth, _ = seal(tensors, key, None, 'tree')
    assert fourth[0].data_ptr() != third[0].data_ptr()


def test_model_load_decrypts_into_its_parameters_and_leaves_the_file_sealed(key, monkeypatch):
    model = segmentor(key)
    state = sealed_state_dict(model)
    sealed_bytes = {n: v.clone() for n, v in state.items()}
    fresh = segmentor(key, seed=5)
    addresses = {n: v.data_ptr() for n, v in fresh.state_dict().items()}
    written = []
    decrypt = gcm.GCM.decrypt
    monkeypatch.setattr(gcm.GCM, 'decrypt', lambda self, index, whole, out, aad: (
        written.append(out.__array_interface__['data'][0]), decrypt(self, index, whole, out,
                                                                     aad))[1])
    fresh.load_state_dict(state)
    assert_unchanged(fresh, model.state_dict())
    assert {n: v.data_ptr() for n, v in fresh.state_dict().items()} == addresses
    assert set(written) == {a for n, a in addresses.items() if fresh.state_dict()[n].numel()}
    monkeypatch.undo()
    assert all(same_bytes(state[n], v) for n, v in sealed_bytes.items())  # still ciphertext
    twin = segmentor(key, seed=6)
    twin.load_state_dict(state, assign=True)  # assign: the plaintext gets its own memory
    assert_unchanged(twin, model.state_dict())
    assert all(same_bytes(state[n], v) for n, v in sealed_bytes.items())


def test_a_tampered_tensor_leaves_every_parameter_unwritten(key):
    model = segmentor(key)
    state = sealed_state_dict(model)
    state['decode_head.conv_seg.bias'] = state['decode_head.conv_seg.bias'].clone()
    state['decode_head.conv_seg.bias'].view(torch.uint8)[0] ^= 1  # the last one written
    victim = segmentor(key, seed=9)
    before = weights(victim)
    with pytest.raises(EncryptedWeightsError, match='conv_seg.bias.*failed authentication'):
        victim.load_state_dict(state)
    assert_unchanged(victim, before)
    assert not torch.equal(before[WEIGHT], model.state_dict()[WEIGHT])


def _checkpoint(key):
    model = segmentor(key)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    for p in model.parameters():
        p.grad = torch.randn_like(p)
    optimizer.step()
    checkpoint = dict(meta={}, state_dict=model.state_dict(), optimizer=optimizer.state_dict(),
                      extra=dict(a=torch.randn(1000), b=torch.randn(70_000)))
    clear = {name: [t.clone() for t in _tree_tensors(checkpoint[name])]
             for name in ('optimizer', 'extra')}
    seal_checkpoint(checkpoint, model, key, describe_module(model))
    return model, checkpoint, clear


def _tree_tensors(entry):
    return [t for path, t in tensors_with_paths(entry) if path[0] != TREE_MARKER]


def test_open_checkpoint_decrypts_in_place(key):
    model, checkpoint, clear = _checkpoint(key)
    addresses = [t.data_ptr() for t in _tree_tensors(checkpoint['optimizer'])]
    open_checkpoint(checkpoint, key, describe_module(model))
    opened = _tree_tensors(checkpoint['optimizer'])
    assert [t.data_ptr() for t in opened] == addresses
    assert all(torch.equal(a, b) for a, b in zip(opened, clear['optimizer']))
    assert all(torch.equal(a, b) for a, b in zip(_tree_tensors(checkpoint['extra']),
                                                 clear['extra']))


@pytest.mark.parametrize('entry, name', [('extra', 'b'), ('extra', 'a')])
def test_a_failed_tag_leaves_every_entry_as_it_was(key, entry, name):
    """The optimizer group opens first, in place; a later failure encrypts it back exactly."""
    model, checkpoint, _ = _checkpoint(key)
    checkpoint[entry][name].view(torch.uint8)[5] ^= 1
    sealed = {n: [t.clone() for t in _tree_tensors(checkpoint[n])] for n in ('optimizer', 'extra')}
    with pytest.raises(EncryptedWeightsError, match=rf"checkpoint\['extra'\]: tensor '{name}'"):
        open_checkpoint(checkpoint, key, describe_module(model))
    for n, before in sealed.items():
        assert TREE_MARKER in checkpoint[n]
        assert all(same_bytes(a, b) for a, b in zip(_tree_tensors(checkpoint[n]), before))


def test_shared_memory_is_not_decrypted_in_place(key):
    """Another process could change it between the check and the decryption."""
    tensors = [(('w', ), torch.randn(1000))]
    sealed, header = _group(key, tensors)
    sealed[('w', )].share_memory_()
    before = sealed[('w', )].clone()
    group = SealedGroup(header, sealed, key, None, 'x', into=sealed)
    opened = group.open()
    assert torch.equal(opened[('w', )], tensors[0][1])
    assert opened[('w', )].data_ptr() != sealed[('w', )].data_ptr()
    assert same_bytes(sealed[('w', )], before)


def test_a_target_overlapping_a_ciphertext_is_not_used(key):
    tensors = [(('a', ), torch.randn(100)), (('b', ), torch.randn(100))]
    sealed, header = _group(key, tensors)
    before = {p: t.clone() for p, t in sealed.items()}
    # 'a' would be written over 'b''s ciphertext: every tensor gets new memory instead
    opened = open_sealed(header, sealed, key, None, 'x', into={('a', ): sealed[('b', )]})
    assert all(torch.equal(opened[p], t) for p, t in tensors)
    assert all(same_bytes(sealed[p], t) for p, t in before.items())


def test_gcm_key_is_not_in_its_repr(key):
    assert 'key' not in repr(gcm.GCM(bytes(32))).replace('<key>', '')
