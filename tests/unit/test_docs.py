"""The README is a front door and every page it or docs/ links to exists."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PAGES = [REPO / 'README.md', *sorted((REPO / 'docs').glob('*.md'))]
LINK = re.compile(r'\]\(([^)\s]+)\)')


def _anchor(heading: str) -> str:
    """GitHub's anchor of a markdown heading."""
    text = re.sub(r'[^\w\- ]', '', heading.strip().lower())
    return text.replace(' ', '-')


def test_readme_is_short_and_has_the_two_commands():
    text = (REPO / 'README.md').read_text()
    assert len(text.splitlines()) <= 150
    assert 'make demo' in text and 'make test' in text


@pytest.mark.parametrize('page', PAGES, ids=lambda p: p.name)
def test_relative_links_resolve(page: Path):
    """Every relative link names an existing file, and an anchor names one of its headings."""
    broken = []
    for target in LINK.findall(page.read_text()):
        if re.match(r'[a-z]+://', target) or target.startswith('mailto:'):
            continue
        path, _, anchor = target.partition('#')
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(target)
        elif anchor and file.suffix == '.md':
            headings = [_anchor(line.lstrip('#')) for line in file.read_text().splitlines()
                        if line.startswith('#')]
            if anchor not in headings:
                broken.append(target)
    assert not broken, f'{page.name}: broken links {broken}'
