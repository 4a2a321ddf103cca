"""tools/upgrade_checkpoint.py on the previous version's fixture: upgraded once, then left alone."""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

from mmseg_keyprotect.checkpoint import MANIFEST_KEY, safe_torch_load
from mmseg_keyprotect.keys import SecretKey

REPO = Path(__file__).resolve().parents[3]
FIXTURE = REPO / 'tests' / 'fixtures' / 'sealed_v2'
sys.path.insert(0, str(REPO / 'tools'))

import upgrade_checkpoint  # noqa: E402


def test_upgrades_once_and_reports_files_it_cannot(tmp_path, capsys, other_key):
    key_file = SecretKey(bytes.fromhex((FIXTURE / 'test_key.hex').read_text().strip())).save(
        tmp_path / 'fixture.key')
    path = tmp_path / 'iter_4.pth'
    shutil.copy(FIXTURE / 'iter_4.ckpt', path)
    assert upgrade_checkpoint.main([str(path), '--key', str(key_file)]) == 0
    assert upgrade_checkpoint.main([str(path), '--key', str(key_file)]) == 0
    out = capsys.readouterr().out
    assert f'{path}: upgraded' in out and f'{path}: already has a manifest' in out
    assert MANIFEST_KEY in safe_torch_load(str(path), 'cpu')['meta']
    wrong = other_key.save(tmp_path / 'other.key')
    assert upgrade_checkpoint.main([str(path), '--key', str(wrong)]) == 1
    assert 'not upgraded' in capsys.readouterr().err
