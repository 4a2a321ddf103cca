"""The same key gives bit-identical permutations and cipher outputs everywhere.

Across fresh processes, dataloader workers and DDP ranks (two gloo processes
started by ``torch.distributed.run``); across numpy/torch versions, the
known-answer tests of ``tests/unit/test_determinism.py`` pin what is derived to
the key derivation alone (HMAC-SHA256 + SHAKE-256 + a stable sort), not to any
global RNG state.
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
import torch
from mmengine.runner import Runner
from mmseg.registry import TRANSFORMS

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models import ChannelPermutation
from mmseg_keyprotect.models.permutation import channel_permutation_index
from mmseg_keyprotect.transforms import BlockFFX, BlockNegPos, BlockShuffle
from tests.unit.test_determinism import IMAGE, sha
from tests.unit.transforms.test_block_cipher import random_image

REPO = Path(__file__).resolve().parents[2]
ENV_KEY = 'KP_DETERMINISM_KEY'


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
from tests.e2e.test_determinism import digests
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
from tests.e2e.test_determinism import digests
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


# ------------------------------------------ keys and block ciphers in a fresh process
def test_same_derivation_in_another_process(seed_key):
    code = ('import warnings; warnings.simplefilter("ignore");'
            'from mmseg_keyprotect.keys import SecretKey;'
            'k = SecretKey.from_seed(1234);'
            'print(k.fingerprint, k.permutation("x", 64).tolist())')
    out = subprocess.run([sys.executable, '-c', code], check=True, capture_output=True,
                         text=True, cwd=REPO).stdout.split(' ', 1)
    assert out[0] == seed_key.fingerprint
    assert out[1].strip() == str(seed_key.permutation('x', 64).tolist())


def test_determinism_in_another_process():
    """Same key, same output, in a fresh interpreter (no shared state)."""
    code = '''
import hashlib, warnings
import numpy as np
warnings.simplefilter("ignore")
import mmseg_keyprotect
from mmseg.registry import TRANSFORMS
img = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
for name in ("BlockShuffle", "BlockNegPos", "BlockFFX"):
    t = TRANSFORMS.build(dict(type=name, block_size=4, key=dict(seed=5, published=True)))
    print(hashlib.sha256(t(dict(img=img.copy()))["img"].tobytes()).hexdigest())
'''
    runs = [subprocess.run([sys.executable, '-c', code], capture_output=True, text=True,
                           check=True, cwd=REPO).stdout.split() for _ in range(2)]
    assert runs[0] == runs[1] and len(runs[0]) == 3
    img = random_image((32, 32, 3))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        here = [hashlib.sha256(TRANSFORMS.build(
            dict(type=n, block_size=4, key=dict(seed=5, published=True)))(dict(img=img.copy()))['img'].tobytes()
        ).hexdigest() for n in ('BlockShuffle', 'BlockNegPos', 'BlockFFX')]
    assert here == runs[0]
