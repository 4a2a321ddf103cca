"""Finding the keyed parts of built objects: models, dataloaders, datasets, pipelines."""
from __future__ import annotations

from typing import Any, Iterator, List

from torch import nn

from ..keyed import KeyedComponent

__all__ = ['walk_containers', 'find_keyed_parts']

# Attributes through which datasets, dataloaders and pipelines hold their transforms.
_CONTAINER_ATTRS = ('dataset', 'datasets', 'pipeline', 'transforms', 'subroutines')


def walk_containers(*targets: Any) -> Iterator[Any]:
    """Every object reachable from ``targets`` through data containers, each once.

    Follows lists/tuples and the attributes through which dataloaders,
    (wrapped) datasets and pipelines hold each other (``dataset``,
    ``datasets``, ``pipeline``, ``transforms``, ``subroutines``). Modules
    are yielded with all their submodules, and the keyed components a module
    holds as plain attributes (weight encryption); keyed components are not entered.
    """
    seen = set()
    stack = list(reversed(targets))
    while stack:
        obj = stack.pop()
        if obj is None or id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, nn.Module):
            for module in obj.modules():
                if id(module) in seen and module is not obj:
                    continue
                seen.add(id(module))
                yield module
                if not isinstance(module, KeyedComponent):
                    held = [v for v in vars(module).values()
                            if isinstance(v, KeyedComponent) and not isinstance(v, nn.Module)]
                    stack.extend(reversed(held))
            continue
        yield obj
        if isinstance(obj, KeyedComponent):
            continue
        if isinstance(obj, (list, tuple)):
            stack.extend(reversed(obj))
            continue
        state = getattr(obj, '__dict__', {})
        stack.extend(reversed([state[attr] for attr in _CONTAINER_ATTRS if attr in state]))


def find_keyed_parts(*targets: Any) -> List[KeyedComponent]:
    """Every keyed component reachable from ``targets``, each once, in a stable order."""
    return [obj for obj in walk_containers(*targets) if isinstance(obj, KeyedComponent)]
