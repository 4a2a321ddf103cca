"""tools/prepare_stanford_background.py: a thin command line over the package's preparation."""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

from tests.stanford_fixture import make_raw_copy, write_lists

REPO = Path(__file__).resolve().parents[3]
_spec = importlib.util.spec_from_file_location(
    'prepare_stanford_background', REPO / 'tools' / 'prepare_stanford_background.py')
tool = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(tool)


def test_prints_counts_and_the_label_fingerprint(tmp_path, capsys):
    raw = make_raw_copy(tmp_path / 'iccv09Data')
    out = tmp_path / 'out'
    tool.main([str(raw), '--out', str(out), '--splits', str(write_lists(tmp_path / 'lists'))])
    printed = capsys.readouterr().out
    fingerprint = json.loads((out / 'prepared.json').read_text())['label_fingerprint']
    assert 'wrote 3 train, 1 val, 2 test images' in printed
    assert f'label fingerprint (sha256): {fingerprint}' in printed


def test_refuses_a_bad_source_with_one_line(tmp_path):
    raw = make_raw_copy(tmp_path / 'iccv09Data')
    (raw / 'images' / 'stray.png').write_bytes(b'x')
    with pytest.raises(SystemExit) as info:
        tool.main([str(raw), '--out', str(tmp_path / 'out'), '--splits',
                   str(write_lists(tmp_path / 'lists'))])
    message = str(info.value)
    assert message.startswith('prepare_stanford_background.py: error: unexpected file')
    assert 'stray.png' in message and '\n' not in message


def test_default_lists_are_the_shipped_ones():
    assert Path(tool.parse_args(['src']).splits) == REPO / 'configs' / '_base_' / 'splits'
