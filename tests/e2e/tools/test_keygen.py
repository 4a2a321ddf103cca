"""tools/keygen.py run as a command: writes a key file, prints its fingerprint, never overwrites."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from mmseg_keyprotect.keys import SecretKey

REPO = Path(__file__).resolve().parents[3]


def test_keygen_tool(tmp_path):
    path = tmp_path / 'owner.key'
    run = subprocess.run([sys.executable, 'tools/keygen.py', str(path)], capture_output=True,
                         text=True, cwd=REPO)
    assert run.returncode == 0, run.stderr
    key = SecretKey.from_file(path)
    assert key.fingerprint in run.stdout
    assert key.export_hex() not in run.stdout + run.stderr
    again = subprocess.run([sys.executable, 'tools/keygen.py', str(path)], capture_output=True,
                           text=True, cwd=REPO)
    assert again.returncode == 1 and 'already exists' in again.stderr
    assert SecretKey.from_file(path) == key
