"""Write the config a post-hoc protection makes.

The config inherits the given one (``_base_``) and adds only the protection,
naming the key by its source (``key=dict(file=...)``), never the key itself.
(The checkpoint is written by :func:`mmseg_keyprotect.apis.export_sealed`.)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Mapping, Sequence



__all__ = ['write_config', 'nested_override', 'key_field', 'CUSTOM_IMPORTS']

#: What a protected config imports (registers the plugin, installs the safe loaders).
CUSTOM_IMPORTS = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)


def write_config(path: Path, base: Path, overrides: Mapping[str, Any],
                 comments: Sequence[str] = ()) -> Path:
    """Write a config that inherits ``base`` and sets ``overrides`` (top-level names).

    Args:
        path: the file to write.
        base: the config it inherits (written as an absolute path).
        overrides: top-level variable -> value (plain Python literals).
        comments: lines written first, as ``#`` comments.

    Returns:
        Path: ``path``.
    """
    lines = [f'# {line}' for line in comments]
    lines.append(f'_base_ = [{str(Path(base).resolve())!r}]')
    lines += [f'{name} = {value!r}' for name, value in overrides.items()]
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text('\n'.join(lines) + '\n')
    return path


def nested_override(paths: Sequence[str], value: Any) -> Dict[str, Any]:
    """``{'model': {'protection': {'key': value}}}`` for ``['model.protection.key']``.

    Raises:
        ValueError: a path through a list (a pipeline step) cannot be overridden by merging.
    """
    root: Dict[str, Any] = {}
    for path in paths:
        parts = path.split('.')
        if any(part.isdigit() for part in parts):
            raise ValueError(f'the key source at {path!r} is inside a list; change it in the '
                             'config by hand')
        node = root
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = value
    return root


def key_field(paths: List[str]) -> List[str]:
    """The config paths of ``key`` fields that are not the top-level ``key`` variable."""
    return [p for p in paths if p != 'key']
