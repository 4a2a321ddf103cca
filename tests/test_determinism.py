"""The same key gives bit-identical permutations and cipher outputs everywhere.

Across fresh processes, dataloader workers and DDP ranks (two gloo processes
started by ``torch.distributed.run``), and across numpy/torch versions: the
known-answer tests below pin what is derived to the key derivation alone
(HMAC-SHA256 + SHAKE-256 + a stable sort), not to any global RNG state.
"""
from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Dict, List

import numpy as np
import pytest
import torch
from mmengine.runner import Runner

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import ChannelPermutation
from mmseg_keyprotect.models.permutation import channel_permutation_index
from mmseg_keyprotect.transforms import BlockFFX, BlockNegPos, BlockShuffle

REPO = Path(__file__).resolve().parents[1]
ENV_KEY = 'KP_DETERMINISM_KEY'
IMAGE = (np.arange(16 * 16 * 3) % 256).astype(np.uint8).reshape(16, 16, 3)


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def digests(key: SecretKey) -> Dict[str, str]:
    """Hashes of everything keyed the demo and paper configs derive from ``key``."""
    out = {
        'permutation shf/b4': sha(key.permutation('shf/block=4/channels=3', 48).tobytes()),
        'mask np/b4': sha(key.mask('np/block=4/channels=3', 48).tobytes()),
        'channel m1 (64)': sha(channel_permutation_index(
            key, 'backbone.layer1:input', 64).numpy().tobytes()),
        'channel m6 (512)': sha(channel_permutation_index(
            key, 'decode_head.conv_seg:input', 512).numpy().tobytes()),
    }
    for cls in (BlockShuffle, BlockNegPos, BlockFFX):
        out[cls.__name__] = sha(cls(block_size=4, key=key)(dict(img=IMAGE.copy()))['img'].tobytes())
    x = torch.arange(2 * 8 * 3 * 3, dtype=torch.float32).reshape(2, 8, 3, 3)
    out['ChannelPermutation output'] = sha(
        ChannelPermutation(8, key, 'p')(x).numpy().tobytes())
    return out


def run(cmd: List[str], key: SecretKey, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, ENV_KEY: key.export_hex(), 'PYTHONWARNINGS': 'ignore',
           'OMP_NUM_THREADS': '1', 'PYTHONPATH': str(REPO)}
    proc = subprocess.run(cmd, cwd=REPO, env=env, capture_output=True, text=True, timeout=300,
                          **kwargs)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-5000:]
    return proc


_CHILD = f'''
import json, warnings
warnings.simplefilter('ignore')
from mmseg_keyprotect.keys import SecretKey
from tests.test_determinism import digests
print(json.dumps(digests(SecretKey.from_env({ENV_KEY!r}))))
'''


def test_same_results_in_a_fresh_process(key):
    child = json.loads(run([sys.executable, '-c', _CHILD], key).stdout)
    assert child == digests(key)
    assert len(set(child.values())) == len(child)  # every purpose has its own result


_DDP = f'''
import json, sys, warnings
warnings.simplefilter('ignore')
import torch.distributed as dist
from mmseg_keyprotect.keys import SecretKey
from tests.test_determinism import digests
dist.init_process_group('gloo')
mine = digests(SecretKey.from_env({ENV_KEY!r}))
everyone = [None] * dist.get_world_size()
dist.all_gather_object(everyone, mine)
with open(f'{{sys.argv[1]}}/rank{{dist.get_rank()}}.json', 'w') as f:
    json.dump(dict(mine=mine, everyone=everyone), f)
dist.destroy_process_group()
'''


def free_port() -> int:
    with socket.socket() as s:
        s.bind(('127.0.0.1', 0))
        return s.getsockname()[1]


def test_same_results_on_every_ddp_rank(tmp_path, key):
    script = tmp_path / 'ranks.py'
    script.write_text(_DDP)
    run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node=2',
         f'--master_port={free_port()}', str(script), str(tmp_path)], key)
    ranks = [json.loads((tmp_path / f'rank{r}.json').read_text()) for r in (0, 1)]
    expected = digests(key)
    for report in ranks:
        assert report['mine'] == expected
        assert report['everyone'] == [expected, expected]


def encrypted_batches(data_root: Path, key_file: Path, num_workers: int) -> List[torch.Tensor]:
    pipeline = [dict(type='LoadImageFromFile'), dict(type='LoadAnnotations'),
                dict(type='BlockShuffle', block_size=2, key=dict(file=str(key_file)),
                     num_channels=3),
                dict(type='PackSegInputs')]
    loader = Runner.build_dataloader(dict(
        batch_size=2, num_workers=num_workers, persistent_workers=False,
        sampler=dict(type='DefaultSampler', shuffle=False),
        dataset=dict(type='SyntheticVOCDataset', data_root=str(data_root),
                     ann_file='ImageSets/Segmentation/val.txt', pipeline=pipeline)), seed=0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return [torch.stack(batch['inputs']) for batch in loader]


def test_same_encrypted_batches_from_dataloader_workers(synthetic_voc, key, key_file):
    in_process = encrypted_batches(synthetic_voc, key_file, num_workers=0)
    in_workers = encrypted_batches(synthetic_voc, key_file, num_workers=2)
    assert len(in_process) == len(in_workers) == 2
    for a, b in zip(in_process, in_workers):
        assert torch.equal(a, b)
    cipher = BlockShuffle(block_size=2, key=key)
    first = in_process[0][0].permute(1, 2, 0).numpy()
    assert not np.array_equal(cipher.decrypt(first), first)  # really encrypted


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
    # tests/models/test_permutation.py::test_index_is_pinned_for_a_fixed_key.
    index = channel_permutation_index(seed_key, 'decode_head.conv_seg:input', 512)
    assert index[:8].tolist() == [422, 349, 40, 22, 365, 280, 488, 262]
    assert sha(index.numpy().astype('<i8').tobytes()) == \
        'a71479bdef703a2e5c2b0718b65aad579c0e70b63e0569b4d2ae55711b37469e'
