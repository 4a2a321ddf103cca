"""The one config walker: paths, order, pruning, replacing while walking, thawing tuples."""
from __future__ import annotations

from mmengine.config import Config

from mmseg_keyprotect.config_tree import (COMPONENT_FIELDS, DATALOADERS, config_root,
                                          thaw_tuples, walk_config)


def tree() -> dict:
    return dict(model=dict(type='M', layers=[dict(type='A'), (dict(type='B'), 3)]), key=1)


def test_walks_every_node_root_first_with_dotted_paths():
    nodes = list(walk_config(tree()))
    assert [n.path for n in nodes] == [
        '', 'model', 'model.type', 'model.layers', 'model.layers.0', 'model.layers.0.type',
        'model.layers.1', 'model.layers.1.0', 'model.layers.1.0.type', 'model.layers.1.1', 'key']
    root, model = nodes[0], nodes[1]
    assert root.parent is None and root.field is None
    assert model.parent is root.value and model.field == 'model'
    assert [n.path for n in walk_config([1], 'data')] == ['data', 'data.0']


def test_a_config_is_walked_through_its_variables():
    cfg = Config(dict(model=dict(type='M')))
    assert config_root(cfg) is cfg._cfg_dict
    assert [n.path for n in walk_config(cfg)] == ['', 'model', 'model.type']


def test_a_pruned_node_is_yielded_but_not_entered():
    paths = [n.path for n in walk_config(tree(), prune=lambda n: n.field == 'layers')]
    assert 'model.layers' in paths and 'model.layers.0' not in paths


def test_a_node_replaced_while_walking_is_entered_as_replaced():
    cfg = tree()
    seen = []
    for node in walk_config(cfg):
        seen.append(node.path)
        if node.path == 'model':
            node.parent['model'] = dict(type='N', inner=dict(type='C'))
    assert cfg['model']['inner'] == dict(type='C')
    assert 'model.inner.type' in seen and 'model.layers' not in seen


def test_only_tuples_holding_wanted_nodes_are_thawed():
    cfg = dict(a=(dict(key=1), 2), b=(3, 4), c=[((dict(key=2), ), )])
    thaw_tuples(cfg, lambda n: n.field == 'key')
    assert cfg['a'] == [dict(key=1), 2] and cfg['b'] == (3, 4)
    assert cfg['c'] == [[[dict(key=2)]]]


def test_where_a_config_keeps_its_parts():
    assert DATALOADERS == ('train_dataloader', 'val_dataloader', 'test_dataloader')
    assert COMPONENT_FIELDS == ('model', 'data_preprocessor') + DATALOADERS
