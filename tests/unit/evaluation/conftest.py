"""What the loop and strategy unit tests share: the demo model, its data, and a hook recorder."""
from __future__ import annotations

import uuid
import warnings
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import pytest
import torch
from mmengine.config import Config
from mmengine.dataset import pseudo_collate
from mmengine.evaluator import Evaluator
from mmseg.registry import DATASETS, METRICS, MODELS
from mmseg.visualization import SegLocalVisualizer
from torch.utils.data import DataLoader

REPO = Path(__file__).resolve().parents[3]
DEMO = REPO / 'configs' / 'demo' / 'fcn_r18-d8_baseline_demo.py'
SEED_KEY = dict(seed=21, published=True)


class HookRecorder:
    """What a loop asks of mmengine's Runner, without one: the model, the work_dir, a
    visualizer, the hooks the loop registers, and a record of the hooks it calls.

    The e2e tests (``tests/e2e/test_condition_loops.py``) run the same loops under
    the real Runner.
    """

    def __init__(self, model: torch.nn.Module, work_dir: Path) -> None:
        self.model = model
        self.work_dir = str(work_dir)
        self.visualizer = SegLocalVisualizer.get_instance(f'unit-{uuid.uuid4().hex}')
        self.hooks: List[Any] = []
        self.calls: List[Tuple[str, Dict[str, Any]]] = []

    def register_hook(self, hook: Any) -> None:
        self.hooks.append(hook)

    def call_hook(self, name: str, **kwargs: Any) -> None:
        self.calls.append((name, kwargs))

    def called(self) -> List[str]:
        return [name for name, _ in self.calls]


def demo_model(points: Optional[Sequence[str]] = ('decode_head.conv_seg:input', )
               ) -> torch.nn.Module:
    """The demo FCN (untrained, seeded), with permutations at ``points`` (None: unprotected)."""
    cfg = Config.fromfile(str(DEMO)).model
    if points:
        cfg.type = 'KeyProtectedEncoderDecoder'
        cfg.protection = dict(key=SEED_KEY, points=list(points))
    torch.manual_seed(0)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        return MODELS.build(cfg).eval()


def demo_loader(data_root: str, cipher: Optional[Dict[str, Any]] = None,
                after: Sequence[Dict[str, Any]] = (), batch_size: int = 2) -> DataLoader:
    """The demo's test pipeline on the fixture's val split (4 images; the untrained
    model's metrics tell the conditions apart there), with ``cipher`` (then ``after``)
    before packing."""
    dataset = Config.fromfile(str(DEMO)).test_dataloader.dataset
    dataset.data_root = data_root
    dataset.ann_file = 'ImageSets/Segmentation/val.txt'
    if cipher is not None:
        dataset.pipeline.insert(-1, cipher)
        dataset.pipeline[-1:-1] = list(after)
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        built = DATASETS.build(dataset)
    return DataLoader(built, batch_size=batch_size, shuffle=False, collate_fn=pseudo_collate)


def iou_evaluator() -> Evaluator:
    return Evaluator(METRICS.build(dict(type='IoUMetric', iou_metrics=['mIoU'])))


@pytest.fixture
def recorder_for(tmp_path):
    """``recorder_for(model)``: a :class:`HookRecorder` writing to ``tmp_path``."""
    return lambda model: HookRecorder(model, tmp_path)
