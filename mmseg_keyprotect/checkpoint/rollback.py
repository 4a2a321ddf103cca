"""The rollback record: the newest iteration of each run seen in a work_dir, authenticated.

A checkpoint's manifest names its run and iteration, but an older checkpoint of
the same run is just as authentic. So every sealed save also writes
``work_dir/RECORD_NAME``: run identity -> newest iteration saved, with an
HMAC under the key. ``--resume`` then refuses a checkpoint older than the
record (the ``last_checkpoint`` pointer or the newest file replaced by an old
one), unless the user names that file on purpose (``load_from=FILE`` with
``resume=True``, which only warns).

What it cannot do: someone who can write the work_dir can delete the record
(a resume then only warns that there is none), or copy the whole work_dir back
to an older state (record included).
"""
from __future__ import annotations

import hashlib
import hmac
import json
import os
from pathlib import Path
from typing import Dict, Union

from ..keys import SecretKey
from .files import write_atomically
from .format import EncryptedWeightsError, canonical

__all__ = ['RECORD_NAME', 'read_record', 'record_iteration']

#: File name of the record in the work_dir.
RECORD_NAME = 'keyprotect_newest.json'
_FORMAT = 'mmseg-keyprotect/newest/v1'


def _mac(key: SecretKey, runs: Dict[str, int]) -> str:
    return hmac.new(key.derive_bytes('seal/rollback-record'), canonical([_FORMAT, runs]),
                    hashlib.sha256).hexdigest()


def read_record(work_dir: Union[str, 'os.PathLike[str]'], key: SecretKey) -> Dict[str, int]:
    """Run identity -> newest iteration saved in ``work_dir`` (empty without a record).

    Raises:
        EncryptedWeightsError: if the record is damaged, edited or of another key.
    """
    path = Path(work_dir) / RECORD_NAME
    if not path.is_file():
        return {}
    try:
        record = json.loads(path.read_text())
        runs, mac = record['runs'], record['mac']
        valid = record.get('format') == _FORMAT and isinstance(runs, dict) and \
            all(isinstance(v, int) for v in runs.values()) and isinstance(mac, str)
    except (OSError, ValueError, KeyError, TypeError):
        valid = False
    if not valid or not hmac.compare_digest(mac, _mac(key, runs)):
        raise EncryptedWeightsError(
            f'the rollback record {str(path)!r} failed authentication (edited, damaged or '
            'written with another key); delete it to resume without rollback protection')
    return runs


def record_iteration(work_dir: Union[str, 'os.PathLike[str]'], key: SecretKey, run: str,
                     iteration: int) -> None:
    """Raise the newest iteration of ``run`` in ``work_dir``'s record to ``iteration``.

    Written to a temporary file and renamed over the record (atomic). A record
    that fails authentication is replaced.
    """
    try:
        runs = read_record(work_dir, key)
    except EncryptedWeightsError:
        runs = {}
    runs[run] = max(int(iteration), runs.get(run, int(iteration)))
    Path(work_dir).mkdir(parents=True, exist_ok=True)
    record = canonical({'format': _FORMAT, 'runs': runs, 'mac': _mac(key, runs)})
    write_atomically(Path(work_dir) / RECORD_NAME, lambda f: f.write(record))
