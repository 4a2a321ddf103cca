"""A family with no config in this project is protected with the issue's two lines."""
from __future__ import annotations

import warnings

import torch
from mmengine.config import Config
from mmseg.registry import MODELS

from mmseg_keyprotect.keys import SecretKey
from mmseg_keyprotect.models.points import POINTS_ATTR
from mmseg_keyprotect.protection import Protection
from tests.unit.models.test_auto_points import outputs_under_conditions

# CGNet: no config of this project protects it; small enough to build at full size.
TWO_LINES = """_base_ = ['mmseg::cgnet/cgnet_fcn_4xb4-60k_cityscapes-680x680.py']
model = dict(type='KeyProtectedEncoderDecoder', protection=dict(key=dict(env='KP_KEY'), points='auto'))
"""


def test_two_lines_protect_cgnet(tmp_path, monkeypatch):
    monkeypatch.setenv('KP_KEY', SecretKey.generate().export_hex())
    path = tmp_path / 'cgnet_protected.py'
    path.write_text(TWO_LINES)
    assert len(path.read_text().splitlines()) == 2
    cfg = Config.fromfile(str(path))
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        model = MODELS.build(cfg.model).eval()
    points = [p.purpose for p in getattr(model, POINTS_ATTR)]
    # CGNet's single output feeds the FCN head; the head's classifier input
    assert points[-1] == 'decode_head.conv_seg:input' and len(points) >= 2
    assert sorted(e['point'] for e in Protection.of(model).describe()) == sorted(points)
    outs = outputs_under_conditions(model, torch.randn(1, 3, 64, 64))
    assert outs[0].shape == (1, 19, 8, 8)
    assert not torch.allclose(outs[0], outs[1]) and not torch.allclose(outs[0], outs[2])
