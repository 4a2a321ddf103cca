"""apis.protect_model / rekey_model on small random-initialised models (no training)."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch
from mmengine.runner import CheckpointLoader

from mmseg_keyprotect.apis import init_protected_model, protect_model, rekey_model
from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.checkpoint import is_sealed
from mmseg_keyprotect.apis.protect import compare_on_images
from mmseg_keyprotect.protection import Protection

from ..unit.posthoc.families import build_family, family_cfg


def _plain_files(tmp_path: Path, family: str, overrides=None):
    model = build_family(family, overrides=overrides)
    config = tmp_path / f'{family}.py'
    family_cfg(family, overrides=overrides).dump(str(config))
    checkpoint = tmp_path / f'{family}.pth'
    torch.save({'state_dict': model.state_dict(), 'meta': {}}, checkpoint)
    return model, config, checkpoint


@pytest.mark.parametrize('family, method', [('fcn', 'permutation'),
                                            ('vit', 'patch-embedding')])
def test_protected_files_reproduce_the_plain_model(tmp_path, family, method):
    model, config, checkpoint = _plain_files(tmp_path, family)
    key = SecretKey.generate()
    key_file = key.save(tmp_path / 'owner.key')
    result = protect_model(config, str(checkpoint), key_file, tmp_path / 'out', method,
                           evaluate=False, cipher='BlockNegPos')
    assert result.max_difference <= 1e-4 and result.report is None
    text = result.config.read_text()
    assert repr(str(key_file)) in text and key.export_hex() not in text
    stored = CheckpointLoader.load_checkpoint(str(result.checkpoint), map_location='cpu')
    assert is_sealed(stored['state_dict'])
    for name, tensor in model.state_dict().items():  # no plaintext weight in the file
        if tensor.numel() > 8 and tensor.is_floating_point():
            assert not torch.equal(stored['state_dict'][name], tensor), name
    plain = init_protected_model(result.config, str(result.checkpoint), condition='plain')
    assert not compare_on_images(model, plain) <= 1e-3  # stored bits without the key: NaN


def test_block_scrambled_vit_files_need_the_key_and_refuse_rekey(tmp_path):
    model, config, checkpoint = _plain_files(tmp_path, 'vit', {'model.backbone.img_size': (64, 64)})
    key = SecretKey.generate()
    key_file = key.save(tmp_path / 'owner.key')
    result = protect_model(config, str(checkpoint), key_file, tmp_path / 'out', 'patch-embedding',
                           evaluate=False, cipher='BlockScramble+BlockShuffle')
    assert result.max_difference <= 1e-4
    assert result.points == ['backbone.patch_embed.projection', 'backbone.pos_embed']
    text = result.config.read_text()
    assert "'block_scramble': {'block_size': 16, 'grid': [4, 4]}" in text
    assert key.export_hex() not in text
    loaded = init_protected_model(result.config, str(result.checkpoint), key=key)
    assert {'BlockScramble', 'BlockUnscramble'} <= {e['type'] for e in
                                                    Protection.of(loaded).describe()}
    new_key = SecretKey.generate().save(tmp_path / 'new.key')
    with pytest.raises(ValueError, match='cannot change the key of a block-scrambled model'):
        rekey_model(result.config, str(result.checkpoint), key_file, new_key, tmp_path / 'b',
                    evaluate=False)


@pytest.mark.slow
def test_rekey_api(tmp_path):
    _, config, checkpoint = _plain_files(tmp_path, 'fcn')
    old = SecretKey.generate().save(tmp_path / 'old.key')
    new = SecretKey.generate().save(tmp_path / 'new.key')
    first = protect_model(config, str(checkpoint), old, tmp_path / 'a', evaluate=False)
    second = rekey_model(first.config, str(first.checkpoint), old, new, tmp_path / 'b',
                         evaluate=False)
    assert second.max_difference <= 1e-4
    a = init_protected_model(first.config, str(first.checkpoint), key=old)
    b = init_protected_model(second.config, str(second.checkpoint), key=new)
    assert compare_on_images(a, b) <= 1e-4
    with pytest.raises(Exception, match='fingerprint'):
        init_protected_model(second.config, str(second.checkpoint), key=old)


def test_a_declared_key_is_not_protection(tmp_path):
    """A top-level ``key`` that no keyed part uses (configs/stanford_background/'s base
    declares one for its children) does not stop protection; a protected config does."""
    model, config, checkpoint = _plain_files(tmp_path, 'fcn')
    key_file = SecretKey.generate().save(tmp_path / 'owner.key')
    with open(config, 'a') as f:
        f.write(f'key = dict(file={str(key_file)!r})\n')
    result = protect_model(config, str(checkpoint), key_file, tmp_path / 'out', evaluate=False)
    assert result.max_difference <= 1e-4
    with pytest.raises(ValueError, match=r'already protected \(key sources at \[.*protection'):
        protect_model(result.config, str(result.checkpoint), key_file, tmp_path / 'again',
                      evaluate=False)
