"""Small random-initialised mmseg models of a family, built from mmseg's own configs."""
from __future__ import annotations

from typing import Any, Dict, Optional

import torch
from mmengine.config import Config
from mmseg.registry import MODELS
from torch import nn

from mmseg_keyprotect.testing.sweep import (FAMILIES, calibrate_norms, mmseg_config_dir,
                                    shrink_config)

SIZE = 64


def family_cfg(family: str, size: int = SIZE,
               overrides: Optional[Dict[str, Any]] = None) -> Config:
    """mmseg's config of ``family`` (the sweep's representative), shrunk for a CPU."""
    entry = FAMILIES[family]
    cfg = Config.fromfile(str(mmseg_config_dir() / family / entry['config']))
    return shrink_config(cfg, size, {**entry.get('overrides', {}), **(overrides or {})})


def build_family(family: str, size: int = SIZE,
                 overrides: Optional[Dict[str, Any]] = None) -> nn.Module:
    """The plain model of ``family``, random weights, batch-norm statistics of random images."""
    torch.manual_seed(0)
    model = MODELS.build(family_cfg(family, size, overrides).model)
    calibrate_norms(model, torch.randn(2, 3, size, size,
                                       generator=torch.Generator().manual_seed(1)))
    return model.eval()
