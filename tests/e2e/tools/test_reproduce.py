"""The Stanford Background chain on a fixture made in the test (no real data):
prepare (from a git directory + commit) -> tools/reproduce.py (mmseg's train/test tools,
2 iterations, 2 incorrect keys) -> the table, the figure, and a resumed run that skips."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from mmseg_keyprotect.datasets.stanford_background import (SourceError,
                                                            prepare_stanford_background,
                                                            read_split_lists)
from tests.stanford_fixture import make_raw_copy, write_lists

REPO = Path(__file__).resolve().parents[3]


def _git(repo: Path, *args: str) -> str:
    return subprocess.run(['git', '-C', str(repo), *args], check=True, capture_output=True,
                          text=True).stdout.strip()


@pytest.fixture
def git_copy(tmp_path):
    """The raw fixture committed to a git repository (as in the public mirror)."""
    repo = tmp_path / 'repo'
    make_raw_copy(repo / 'iccv09Data')
    _git(repo, 'init', '-q')
    _git(repo, 'add', '.')
    _git(repo, '-c', 'user.name=t', '-c', 'user.email=t@t', 'commit', '-qm', 'data')
    return repo, _git(repo, 'rev-parse', 'HEAD')


def test_git_source_gives_the_folder_result(git_copy, tmp_path):
    repo, commit = git_copy
    lists = read_split_lists(write_lists(tmp_path / 'lists'))
    from_git = prepare_stanford_background(f'{repo / ".git"}@{commit}', tmp_path / 'a', lists)
    from_folder = prepare_stanford_background(repo, tmp_path / 'b', lists)
    assert from_git.label_fingerprint == from_folder.label_fingerprint
    assert from_git.counts == {'train': 3, 'val': 1, 'test': 2}
    with pytest.raises(SourceError, match='git ls-tree .*:nothing in .* failed'):
        prepare_stanford_background(f'{repo / ".git"}@{commit}:nothing', tmp_path / 'c', lists)


@pytest.mark.slow
def test_reproduce_trains_tests_reports_and_resumes(tmp_path):
    raw = make_raw_copy(tmp_path / 'iccv09Data')
    data, out = tmp_path / 'data', tmp_path / 'out'
    env = dict(os.environ, PYTHONWARNINGS='ignore')

    def run(*args):
        proc = subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=env,
                              capture_output=True, text=True, timeout=600)
        assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
        return proc.stdout

    run('tools/prepare_stanford_background.py', raw, '--out', data, '--splits',
        write_lists(tmp_path / 'lists'))
    quick = ['--data', data, '--out', out, '--rows', 'baseline', 'perm-m1to6-encw',
             '--seeds', '0', '--max-iters', '2', '--incorrect', '2', '--jobs', '2']
    printed = run('tools/reproduce.py', *quick)
    # 'baseline' also selects the baseline protected after training, which waits for it
    assert printed.startswith('3 run(s) to do')
    results = json.loads((out / 'results.json').read_text())
    rows = results['rows']
    assert rows['baseline (unprotected)']['seeds_done'] == [0]
    after = rows['baseline protected after training (tools/protect.py, points=auto)']
    assert after['seeds_done'] == [0] and after['incorrect_keys'] == '2'
    # exact under the key: the trained model's own score
    assert after['mIoU']['correct']['mean'] == pytest.approx(
        rows['baseline (unprotected)']['mIoU']['correct']['mean'], abs=0.05)
    assert all(run['timing']['cpu_s'] > 0 for row in rows.values()
               for run in row['runs'].values())
    recommended = rows['recommended (Model-1..6 + encrypted weights)']
    assert recommended['seeds_done'] == [0] and recommended['incorrect_keys'] == '2'
    assert set(recommended['mIoU']) == {'correct', 'plain', 'incorrect'}
    assert 'not run yet' in (out / 'results.md').read_text()  # the other rows
    assert 0 <= results['floor']['mIoU_per_image'] <= 100
    assert (out / 'conditions.png').stat().st_size > 0
    assert 'owner' not in (out / 'results.md').read_text()
    # resumed: nothing left to train
    assert '0 run(s) to do' in run('tools/reproduce.py', *quick, '--no-figure')
