"""A sweep over every model family mmseg ships: protect each with ``points='auto'``.

For each family directory of ``mmseg/.mim/configs/`` the sweep takes one
representative config (:data:`FAMILIES`), writes the protected child config a
user would write, next to a key file::

    _base_ = ['mmseg::fcn/fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py']
    model = dict(type='KeyProtectedEncoderDecoder', protection=dict(
        key=dict(file='owner.key'), points='auto', encrypt_weights=True))

loads it with mmengine's ``Config.fromfile``, shrinks it for a CPU
(:func:`shrink_config`: no pretrained weights, SyncBN -> BN, a tiny input,
``whole`` inference, and the family's entry in :data:`FAMILIES`) and checks
(:func:`check_family`) that

1. the model builds and ``'auto'`` finds points;
2. the correct key, plain and an incorrect key give three different outputs;
3. gradients reach every permuted point (``loss`` of every head, backward);
4. :class:`~mmseg_keyprotect.evaluation.loops.KeyConditionTestLoop` runs on a
   tiny generated dataset (with mmengine's ``Runner``);
5. the checkpoint (weights encrypted with the key) reloaded in a *fresh
   process* gives the same outputs (:func:`reload_checkpoints`, one
   subprocess for all families).

and measures how strongly each family is protected: the fraction of pixels
whose predicted class under the plain and an incorrect key differs from the
correct key's, on a fixed input (:attr:`FamilyResult.changed_plain`,
:attr:`FamilyResult.changed_incorrect`); for a depth estimator (VPD), whose
depth differs by a factor of :data:`DEPTH_RATIO` or more (:func:`changed_depth`).

A family that fails stays in the results with the stage and the error. A
family whose config imports a package of the ``families`` extra
(``pip install -e '.[families]'``: mmdet, mmpretrain; and Stable Diffusion's
``ldm``, :data:`EXTRA_INSTALL`) that is not installed is not built: its status
is :data:`NEEDS_EXTRA`.
:func:`markdown_table` renders ``docs/architectures.md``; the command line is
``tools/dev/sweep_families.py``.
"""
from __future__ import annotations

import importlib.util
import json
import re
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import torch
from mmengine.config import Config
from mmengine.registry import init_default_scope
from torch import Tensor, nn

from ..config_tree import walk_config

__all__ = [
    'FAMILIES', 'NEEDS_EXTRA', 'EXTRA_INSTALL', 'DEPTH_RATIO', 'FamilyResult', 'missing_extra',
    'mmseg_config_dir', 'list_families', 'protected_child_config', 'shrink_config',
    'family_config', 'predict_logits', 'changed_pixels', 'changed_depth', 'run_test_loop',
    'check_family',
    'reload_checkpoints', 'run_sweep', 'markdown_table', 'parse_table'
]

#: Input side (pixels) of the sweep's square inputs.
DEFAULT_SIZE = 64

_VIT_4 = {'model.backbone.num_layers': 4, 'model.backbone.out_indices': (0, 1, 2, 3)}
# SAN with narrower CLIP encoders (the widths that must agree change together), fewer layers
_SAN_SMALL = {
    'model.data_preprocessor.size_divisor': None,
    'model.image_encoder.num_layers': 3, 'model.image_encoder.out_indices': (0, 1, 2),
    'model.image_encoder.embed_dims': 96, 'model.decode_head.san_cfg.clip_channels': 96,
    'model.decode_head.maskgen_cfg.embed_dims': 96,
    'model.text_encoder.num_layers': 1, 'model.text_encoder.embed_dims': 64,
    'model.text_encoder.output_dims': 64, 'model.decode_head.maskgen_cfg.out_dims': 64,
    'model.decode_head.san_cfg.cfg_encoder.num_encode_layer': 4,
}

#: The status of a family whose packages (``extra``) are not installed.
NEEDS_EXTRA = 'needs the families extra'

_MMDET = ('mmdet', )
_MMPRETRAIN = ('mmpretrain', )
#: Stable Diffusion's ``ldm`` (the package stable-diffusion-sdkit installs), for VPD
_LDM = ('ldm', )
#: How a package of the extra that ``pip install -e '.[families]'`` does not bring is installed.
EXTRA_INSTALL = {'ldm': 'pip install --no-deps stable-diffusion-sdkit==2.1.5'}
_SD = 'model.backbone.diffusion_cfg.'
# VPD with Stable Diffusion's UNet and autoencoder narrower (320 -> 32 and 128 -> 32 channels,
# the head's widths with them), no SD checkpoint (None: nothing is downloaded), the input not
# padded to 512
_VPD_SMALL = {
    _SD + 'checkpoint': None,
    _SD + 'params.unet_config.params.model_channels': 32,
    _SD + 'params.unet_config.params.num_heads': 2,
    _SD + 'params.unet_config.params.context_dim': 64,
    _SD + 'params.first_stage_config.params.ddconfig.ch': 32,
    _SD + 'params.first_stage_config.params.ddconfig.num_res_blocks': 1,
    'model.backbone.pad_shape': DEFAULT_SIZE,
    'model.decode_head.in_channels': [32, 64, 128, 128],
    'model.decode_head.embed_dim': 16, 'model.decode_head.feature_dim': 128,
    'model.decode_head.fmap_border': 0,  # the border of the 480 -> 512 padding
}
#: NYU's 27 scene classes, as ``NYUDataset`` numbers them
_NYU_CLASSES = 27


def _vpd_class_embeddings(folder: Path) -> str:
    """Random stand-ins for VPD's CLIP embeddings of the NYU class names (a download).

    27 x 64 (the narrowed UNet's ``context_dim``), seeded, written once to
    ``folder/class_embeddings.pth``; VPD keeps them as a buffer, so the
    checkpoint carries them.
    """
    path = folder / 'class_embeddings.pth'
    if not path.exists():
        generator = torch.Generator().manual_seed(0)
        torch.save(torch.randn(_NYU_CLASSES, 64, generator=generator), path)
    return str(path)


#: family -> ``config`` (file in ``mmseg/.mim/configs/<family>/``), optional
#: ``overrides`` (dotted config keys merged after :func:`shrink_config`; only
#: what makes the model smaller or fits the tiny input), optional ``size`` (the
#: input side, when the default is too small for the model), optional ``extra``
#: (the packages of the ``families`` extra its config imports), optional
#: ``init_normal`` (parameter -> std of a normal initialisation, for parameters a model
#: leaves uninitialised for its pretrained weights), optional ``files`` (dotted config key ->
#: a function that writes a local stand-in for a file the config downloads into the
#: family's folder and returns its path) and optional ``needs`` (what the family needs that
#: this project cannot provide; shown when it fails).
FAMILIES: Dict[str, Dict[str, Any]] = {
    'ann': {'config': 'ann_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'apcnet': {'config': 'apcnet_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'beit': {'config': 'beit-base_upernet_8xb2-160k_ade20k-640x640.py',
             'overrides': {**_VIT_4, 'model.backbone.img_size': (64, 64)}},
    'bisenetv1': {'config': 'bisenetv1_r18-d32_4xb4-160k_coco-stuff164k-512x512.py'},
    'bisenetv2': {'config': 'bisenetv2_fcn_4xb4-160k_cityscapes-1024x1024.py'},
    'ccnet': {'config': 'ccnet_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'cgnet': {'config': 'cgnet_fcn_4xb4-60k_cityscapes-680x680.py'},
    'convnext': {'config': 'convnext-tiny_upernet_8xb2-amp-160k_ade20k-512x512.py',
                 'overrides': {'model.backbone.arch': 'atto',  # mmpretrain's smallest
                               'model.decode_head.in_channels': [40, 80, 160, 320],
                               'model.auxiliary_head.in_channels': 160},
                 'extra': _MMPRETRAIN},
    'danet': {'config': 'danet_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'ddrnet': {'config': 'ddrnet_23-slim_in1k-pre_2xb6-120k_cityscapes-1024x1024.py'},
    'deeplabv3': {'config': 'deeplabv3_r18-d8_4xb2-80k_cityscapes-512x1024.py'},
    'deeplabv3plus': {'config': 'deeplabv3plus_r18-d8_4xb4-80k_loveda-512x512.py'},
    'dmnet': {'config': 'dmnet_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'dnlnet': {'config': 'dnl_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'dpt': {'config': 'dpt_vit-b16_8xb2-160k_ade20k-512x512.py', 'overrides': _VIT_4},
    'dsdl': {'config': 'voc.py'},
    'emanet': {'config': 'emanet_r50-d8_4xb2-80k_cityscapes-512x1024.py'},
    'encnet': {'config': 'encnet_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'erfnet': {'config': 'erfnet_fcn_4xb4-160k_cityscapes-512x1024.py'},
    'fastfcn': {'config': 'fastfcn_r50-d32_jpu_psp_4xb4-80k_ade20k-512x512.py'},
    'fastscnn': {'config': 'fast_scnn_8xb4-160k_cityscapes-512x1024.py'},
    'fcn': {'config': 'fcn_r18-d8_4xb2-80k_cityscapes-512x1024.py'},
    'gcnet': {'config': 'gcnet_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'hrnet': {'config': 'fcn_hr18s_4xb4-80k_ade20k-512x512.py'},
    'icnet': {'config': 'icnet_r18-d8_4xb2-80k_cityscapes-832x832.py'},
    'isanet': {'config': 'isanet_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'knet': {'config': 'knet-s3_r50-d8_fcn_8xb2-adamw-80k_ade20k-512x512.py'},
    'mae': {'config': 'mae-base_upernet_8xb2-amp-160k_ade20k-512x512.py',
            'overrides': {**_VIT_4, 'model.backbone.img_size': (64, 64)}},
    'mask2former': {'config': 'mask2former_r50_8xb2-160k_ade20k-512x512.py',
                    'extra': _MMDET},
    'maskformer': {'config': 'maskformer_r50-d32_8xb2-160k_ade20k-512x512.py',
                   'extra': _MMDET},
    'mobilenet_v2': {'config': 'mobilenet-v2-d8_fcn_4xb4-160k_ade20k-512x512.py'},
    'mobilenet_v3': {'config': 'mobilenet-v3-d8-s_lraspp_4xb4-320k_cityscapes-512x1024.py',
                     'size': 392},  # LRASPP pools 49x49 windows of the 1/8 features
    'nonlocal_net': {'config': 'nonlocal_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'ocrnet': {'config': 'ocrnet_hr18s_4xb4-80k_ade20k-512x512.py'},
    'pidnet': {'config': 'pidnet-s_2xb6-120k_1024x1024-cityscapes.py'},
    'point_rend': {'config': 'pointrend_r50_4xb4-160k_ade20k-512x512.py'},
    'poolformer': {'config': 'fpn_poolformer_s12_8xb4-40k_ade20k-512x512.py',
                   'extra': _MMPRETRAIN},
    'psanet': {'config': 'psanet_r50-d8_4xb4-80k_ade20k-512x512.py'},
    'pspnet': {'config': 'pspnet_r18-d8_4xb4-80k_loveda-512x512.py'},
    'resnest': {'config': 'resnest_s101-d8_fcn_4xb4-160k_ade20k-512x512.py'},
    # (the VOC config keeps the COCO-Stuff loss's 172 class weights for 21 classes: it cannot
    # train; the COCO-Stuff config, on which SAN is trained, can)
    'san': {'config': 'san-vit-b16_coco-stuff164k-640x640.py', 'overrides': _SAN_SMALL,
            # CLIPTextEncoder leaves these torch.empty for pretrained weights (CLIP's init)
            'init_normal': {'text_encoder.positional_embedding': 0.01,
                            'text_encoder.text_projection': 64**-0.5}},
    'segformer': {'config': 'segformer_mit-b0_8xb2-160k_ade20k-512x512.py'},
    'segmenter': {'config': 'segmenter_vit-t_mask_8xb1-160k_ade20k-512x512.py',
                  'overrides': {'model.backbone.num_layers': 2}},
    'segnext': {'config': 'segnext_mscan-t_1xb16-adamw-160k_ade20k-512x512.py'},
    'sem_fpn': {'config': 'fpn_r50_4xb4-160k_ade20k-512x512.py'},
    'setr': {'config': 'setr_vit-l_pup_8xb2-160k_ade20k-512x512.py', 'overrides': _VIT_4},
    'stdc': {'config': 'stdc1_4xb12-80k_cityscapes-512x1024.py'},
    'swin': {'config': 'swin-tiny-patch4-window7-in1k-pre_upernet_8xb2-160k_ade20k-512x512.py',
             'overrides': {'model.backbone.depths': [1, 1, 1, 1]}},
    'twins': {'config': 'twins_pcpvt-s_fpn_fpnhead_8xb4-80k_ade20k-512x512.py',
              'overrides': {'model.backbone.depths': [1, 1, 1, 1]}},
    'unet': {'config': 'unet-s5-d16_fcn_4xb4-40k_drive-64x64.py'},
    'upernet': {'config': 'upernet_r18_4xb4-80k_ade20k-512x512.py'},
    'vit': {'config': 'vit_deit-s16_upernet_8xb2-80k_ade20k-512x512.py', 'overrides': _VIT_4},
    # a depth estimator (NYU depth), not a segmentor
    'vpd': {'config': 'vpd_sd_4xb8-25k_nyu-480x480.py', 'overrides': _VPD_SMALL,
            'files': {'model.backbone.class_embed_path': _vpd_class_embeddings},
            'extra': _LDM},
}

_PROTECTED_TYPES = {
    'EncoderDecoder': 'KeyProtectedEncoderDecoder',
    'CascadeEncoderDecoder': 'KeyProtectedCascadeEncoderDecoder',
    'MultimodalEncoderDecoder': 'KeyProtectedMultimodalEncoderDecoder',
    'DepthEstimator': 'KeyProtectedDepthEstimator',
}
_CHILD_CONFIG = """_base_ = ['mmseg::{family}/{config}']
model = dict(type='{segmentor}', protection=dict(key=dict(file={key_file!r}), points='auto', encrypt_weights=True))
"""


@dataclass
class FamilyResult:
    """What the sweep found for one family.

    Attributes:
        family: the directory name under ``mmseg/.mim/configs/``.
        config: the representative config file.
        status: ``'ok'`` when every check passed, :data:`NEEDS_EXTRA` when a
            package of the ``families`` extra is not installed, else ``'failed'``.
        points: the names of the points ``'auto'`` chose.
        changed_plain: the fraction of pixels whose predicted class without a
            key differs from the correct key's (fixed input; None if not measured);
            for a depth estimator, whose depth differs by :data:`DEPTH_RATIO` or more.
        changed_incorrect: the same for an incorrect key.
        stage: the check that failed (``'config'``, ``'build'``, ``'conditions'``,
            ``'gradients'``, ``'test loop'``, ``'checkpoint'``, ``'reload'``).
        reason: why it failed (one line), or None.
        seconds: wall time of the in-process checks.
    """

    family: str
    config: str
    status: str = 'failed'
    points: List[str] = field(default_factory=list)
    changed_plain: Optional[float] = None
    changed_incorrect: Optional[float] = None
    stage: Optional[str] = None
    reason: Optional[str] = None
    seconds: float = 0.0


def missing_extra(family: str) -> List[str]:
    """The packages of the ``families`` extra that ``family`` needs and that are not installed."""
    return [name for name in FAMILIES.get(family, {}).get('extra', ())
            if importlib.util.find_spec(name) is None]


def mmseg_config_dir() -> Path:
    """``mmseg/.mim/configs`` of the installed mmseg."""
    import mmseg
    return Path(mmseg.__file__).parent / '.mim' / 'configs'


def list_families() -> List[str]:
    """Every family directory mmseg ships (``_base_`` excluded), sorted."""
    return sorted(p.name for p in mmseg_config_dir().iterdir()
                  if p.is_dir() and not p.name.startswith('_'))


def protected_child_config(family: str, config: str, base_type: str, key_file: str) -> str:
    """The text of the protected child config a user writes for ``family``'s ``config``.

    Raises:
        ValueError: if ``base_type`` (the base config's segmentor) has no protected variant.
    """
    if base_type not in _PROTECTED_TYPES:
        raise ValueError(f'segmentor type {base_type!r} has no protected variant (protected: '
                         f'{sorted(_PROTECTED_TYPES)})')
    return _CHILD_CONFIG.format(family=family, config=config,
                                segmentor=_PROTECTED_TYPES[base_type], key_file=key_file)


def shrink_config(cfg: Config, size: int = DEFAULT_SIZE,
                  overrides: Optional[Mapping[str, Any]] = None) -> Config:
    """Make a family's config cheap on a CPU without changing its architecture, in place.

    No pretrained weights (``pretrained``, ``init_cfg`` of type ``Pretrained``),
    SyncBN -> BN, inputs padded to ``size`` x ``size``, ``whole`` inference,
    then ``overrides`` (dotted keys, e.g. fewer transformer layers).

    Returns:
        the same ``cfg``.
    """
    model = cfg.model
    for node in (n.value for n in walk_config(model) if isinstance(n.value, dict)):
        if isinstance(node.get('pretrained'), str):
            node['pretrained'] = None
        init_cfg = node.get('init_cfg')
        if isinstance(init_cfg, dict) and init_cfg.get('type') == 'Pretrained':
            node['init_cfg'] = None
        if node.get('type') == 'SyncBN':
            node['type'] = 'BN'
    if isinstance(model.get('data_preprocessor'), dict):
        model.data_preprocessor['size'] = (size, size)
    test_cfg = dict(model.get('test_cfg') or {})
    for arg in ('crop_size', 'stride'):
        test_cfg.pop(arg, None)
    model['test_cfg'] = dict(test_cfg, mode='whole')
    if overrides:
        cfg.merge_from_dict(dict(overrides))
    return cfg


def family_config(folder: Path, size: int = DEFAULT_SIZE) -> Config:
    """The shrunk config of a family folder made by :func:`check_family` (``protected.py``).

    The entry's ``files`` are written into ``folder`` (once) and their paths set.
    """
    entry = FAMILIES[folder.name]
    cfg = Config.fromfile(str(folder / 'protected.py'))
    shrink_config(cfg, entry.get('size', size), entry.get('overrides'))
    cfg.merge_from_dict({key: make(folder) for key, make in entry.get('files', {}).items()})
    return cfg


def _num_classes(model: nn.Module) -> int:
    head = model.decode_head[-1] if isinstance(model.decode_head, nn.ModuleList) \
        else model.decode_head
    return max(2, int(getattr(head, 'num_classes', 2)))


def _data_samples(batch: int, size: int, num_classes: int, seed: int) -> List[Any]:
    from mmengine.structures import PixelData
    from mmseg.structures import SegDataSample
    generator = torch.Generator().manual_seed(seed)
    samples = []
    for _ in range(batch):
        sample = SegDataSample(metainfo=dict(img_shape=(size, size), pad_shape=(size, size),
                                             ori_shape=(size, size)))
        labels = torch.randint(0, min(num_classes, 4), (1, size, size), generator=generator)
        sample.gt_sem_seg = PixelData(data=labels)
        sample.gt_edge_map = PixelData(data=(labels > 0).long())  # PIDNet's boundary loss
        sample.gt_depth_map = PixelData(data=1 + labels.float())  # depth estimators, in metres
        samples.append(sample)
    return samples


def _inputs(size: int, batch: int = 2, seed: int = 0) -> Tensor:
    return torch.randn(batch, 3, size, size, generator=torch.Generator().manual_seed(seed))


def predict_logits(model: nn.Module, inputs: Tensor) -> Tensor:
    """The segmentation logits ``model.predict`` gives for ``inputs`` (stacked, float).

    For a depth estimator, the depth maps (``pred_depth_map``, one channel).

    ``predict`` is the inference path every segmentor implements (cascades and
    heads with extra outputs included), unlike ``mode='tensor'``. It runs with
    the global RNG seeded (and restored afterwards): some heads draw random
    numbers at inference (SegNeXt's Hamburger initialises its NMF bases
    randomly), and outputs are compared across processes.
    """
    size = tuple(inputs.shape[-2:])
    metas = [dict(img_shape=size, ori_shape=size, pad_shape=size)] * len(inputs)
    from mmseg.structures import SegDataSample
    samples = [SegDataSample(metainfo=meta) for meta in metas]
    with torch.no_grad(), torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        results = model.predict(inputs, samples)
    return torch.stack([(r.seg_logits if 'seg_logits' in r else r.pred_depth_map).data.float()
                        for r in results])


def _outputs_under_conditions(model: nn.Module, inputs: Tensor) -> List[Tensor]:
    from ..protection import KeyCondition, make_conditions
    from ..protection import Protection
    conditions = [KeyCondition.correct(), KeyCondition.plain(),
                  make_conditions(correct=False, plain=False, incorrect=1, seed=0)[0]]
    outputs = []
    for condition in conditions:
        with Protection.of(model).applied(condition):
            outputs.append(predict_logits(model, inputs))
    return outputs


def changed_pixels(reference: Tensor, other: Tensor) -> float:
    """The fraction of pixels whose predicted class (argmax over dim 1) differs, rounded."""
    return round((reference.argmax(1) != other.argmax(1)).float().mean().item(), 4)


#: A depth differs when one is this many times the other: the threshold of the
#: ``d1`` accuracy of mmseg's ``DepthMetric`` (``max(d / d', d' / d) < 1.25``).
DEPTH_RATIO = 1.25


def changed_depth(reference: Tensor, other: Tensor, ratio: float = DEPTH_RATIO) -> float:
    """The fraction of pixels whose depth differs from ``reference``'s by ``ratio`` or more, rounded.

    A pixel is unchanged when it would count as accurate in ``DepthMetric``'s
    ``d1`` with ``reference`` as the ground truth. Depths are positive
    (``VPDDepthHead`` ends with a sigmoid times ``max_depth``); a depth of 0 is
    taken as the smallest positive float.
    """
    tiny = torch.finfo(reference.dtype).tiny
    a, b = reference.clamp_min(tiny), other.clamp_min(tiny)
    return round((torch.maximum(a / b, b / a) >= ratio).float().mean().item(), 4)


def _is_depth(model: nn.Module) -> bool:
    from mmseg.models.segmentors import DepthEstimator
    return isinstance(model, DepthEstimator)


def calibrate_norms(model: nn.Module, inputs: Tensor) -> None:
    """Set batch-norm running statistics to those of ``inputs`` (one train-mode pass).

    A freshly initialised model in eval mode normalises with mean 0 and
    variance 1, so activations can saturate (ReLU6, sigmoid gates) and hide
    what the permutations do; after this the model behaves like a trained one.
    """
    norms = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    momenta = [m.momentum for m in norms]
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # cumulative average: one batch sets the statistics
    model.train()
    try:
        with torch.no_grad(), torch.random.fork_rng(devices=[]):
            size = inputs.shape[-1]
            model.loss(inputs, _data_samples(len(inputs), size, _num_classes(model), 2))
    finally:
        model.eval()
        for norm, momentum in zip(norms, momenta):
            norm.momentum = momentum


def _check_gradients(model: nn.Module, size: int) -> None:
    """Backward through ``loss`` of every head; each permutation's output gets a gradient."""
    from ..protection import Protection
    permutations = Protection.of(model).permutations
    captured: Dict[str, Tensor] = {}
    handles = []
    for perm in permutations:
        def keep(module: nn.Module, args: Any, output: Tensor, name: str = perm.purpose) -> None:
            output.retain_grad()
            captured[name] = output
        handles.append(perm.register_forward_hook(keep))
    try:
        model.train()
        losses = model.loss(_inputs(size, seed=1), _data_samples(2, size, _num_classes(model), 1))
        loss, _ = model.parse_losses(losses)
        loss.backward()
    finally:
        for handle in handles:
            handle.remove()
        model.eval()
        model.zero_grad(set_to_none=True)
    missing = [name for name in (p.purpose for p in permutations)
               if name not in captured or captured[name].grad is None
               or not captured[name].grad.abs().sum() > 0]
    if missing:
        raise AssertionError(f'no gradient reaches {missing}')


def _test_data(model: nn.Module, data_root: Path, size: int) -> Tuple[dict, dict]:
    """The test dataset and evaluator: the synthetic VOC set and ``IoUMetric``, or for a
    depth estimator the synthetic NYU set (made next to ``data_root``) and ``DepthMetric``."""
    resize = dict(type='Resize', scale=(size, size), keep_ratio=False)
    if not _is_depth(model):
        pipeline = [dict(type='LoadImageFromFile'), resize, dict(type='LoadAnnotations'),
                    dict(type='PackSegInputs')]
        return (dict(type='SyntheticVOCDataset', data_root=str(data_root),
                     ann_file='ImageSets/Segmentation/val.txt', pipeline=pipeline),
                dict(type='IoUMetric', iou_metrics=['mIoU']))
    from ..datasets import make_synthetic_nyu
    nyu_root = make_synthetic_nyu(data_root.parent / 'data_nyu', 1, (size, size))
    pipeline = [dict(type='LoadImageFromFile'), resize,
                dict(type='LoadDepthAnnotation', depth_rescale_factor=1e-3),
                dict(type='PackSegInputs', meta_keys=('img_path', 'depth_map_path', 'ori_shape',
                                                      'img_shape', 'pad_shape', 'scale_factor',
                                                      'flip', 'flip_direction', 'category_id'))]
    return (dict(type='NYUDataset', data_root=str(nyu_root), test_mode=True,
                 data_prefix=dict(img_path='images/test', depth_map_path='annotations/test'),
                 pipeline=pipeline),
            dict(type='DepthMetric', min_depth_eval=0.001, max_depth_eval=10.0))


def run_test_loop(model: nn.Module, data_root: Path, work_dir: Path,
                  size: int = DEFAULT_SIZE) -> Dict[str, Any]:
    """Run ``KeyConditionTestLoop`` (correct, plain, one incorrect key) with mmengine's Runner.

    Args:
        model: a built protected model.
        data_root: a synthetic VOC dataset (:func:`~mmseg_keyprotect.datasets.make_synthetic_voc`)
            for a segmentor; a depth estimator gets a synthetic NYU-layout set made in
            ``data_root``'s parent folder (``data_nyu``) and mmseg's ``DepthMetric``.
        work_dir: the runner's work_dir (``key_conditions.json`` is written there).
        size: images are resized to ``size`` x ``size``.

    Returns:
        dict: the loop's flat metrics (``correct/mIoU``, ``plain/rmse``, ...).
    """
    from mmengine.runner import Runner
    dataset, evaluator = _test_data(model, data_root, size)
    runner = Runner(
        model=model,
        work_dir=str(work_dir),
        experiment_name=f'sweep_{work_dir.name}',
        test_dataloader=dict(
            batch_size=1, num_workers=0, sampler=dict(type='DefaultSampler', shuffle=False),
            dataset=dataset),
        test_cfg=dict(type='KeyConditionTestLoop', incorrect=1, seed=0),
        test_evaluator=evaluator,
        default_scope='mmseg',
        default_hooks=dict(logger=dict(type='LoggerHook', interval=1)),
        log_level='WARNING')
    return runner.test()


def check_family(family: str, work_dir: Path, key_file: Path, data_root: Path,
                 size: int = DEFAULT_SIZE, test_loop: bool = True) -> FamilyResult:
    """Run every in-process check on one family and save what the reload needs.

    Writes ``work_dir/<family>/``: the protected child config (``protected.py``),
    the checkpoint (``model.pth``), the input and the correct-key output (``io.pt``).

    Args:
        family: a key of :data:`FAMILIES`.
        work_dir: where the family's folder is made.
        key_file: the owner key file the child config names.
        data_root: a generated synthetic dataset (``make_synthetic_voc``) with
            ``size`` x ``size`` images, for the test loop.
        size: input side in pixels.
        test_loop: also run ``KeyConditionTestLoop``.

    Returns:
        FamilyResult: ``status='ok'`` (until :func:`reload_checkpoints` says
        otherwise) or the stage and reason of the first failure.
    """
    from mmengine.runner.checkpoint import save_checkpoint, weights_to_cpu
    from mmseg.registry import MODELS

    from ..protection import Protection
    from ..models.weight_encryption import mark_checkpoints_sealed, sealed_state_dict

    entry = FAMILIES.get(family)
    result = FamilyResult(family, entry['config'] if entry else '-')
    size = entry.get('size', size) if entry else size
    if entry is None:
        result.stage, result.reason = 'config', 'no representative config in the sweep table'
        return result
    missing = missing_extra(family)
    if missing:
        result.status, result.stage = NEEDS_EXTRA, 'config'
        commands = ["pip install -e '.[families]'"] + [
            EXTRA_INSTALL[name] for name in missing if name in EXTRA_INSTALL]
        result.reason = f"{', '.join(missing)} not installed: {' and '.join(commands)} " \
            '(or make sweep)'
        return result
    start = time.perf_counter()
    folder = work_dir / family
    folder.mkdir(parents=True, exist_ok=True)
    stage = 'config'
    try:
        base = mmseg_config_dir() / family / entry['config']
        base_type = Config.fromfile(str(base)).model.type
        child = folder / 'protected.py'
        child.write_text(protected_child_config(family, entry['config'], base_type,
                                                str(key_file)))
        cfg = family_config(folder, size)
        stage = 'build'
        torch.manual_seed(0)
        init_default_scope('mmseg')
        model = MODELS.build(cfg.model).eval()
        with torch.no_grad():
            for name, std in entry.get('init_normal', {}).items():
                model.get_parameter(name).normal_(std=std)
        # the sweep writes no training checkpoint (only the sealed state_dict below), so
        # the calibration and gradient passes may call loss() without a CheckpointSealHook
        mark_checkpoints_sealed(model)
        result.points = Protection.of(model).points
        if Protection.of(model).weight_encryption is None:
            raise AssertionError('the built model does not encrypt its weights')
        stage = 'conditions'
        inputs = _inputs(size)
        calibrate_norms(model, inputs)
        correct, plain, incorrect = _outputs_under_conditions(model, inputs)
        for name, other in (('plain', plain), ('incorrect', incorrect)):
            if torch.allclose(correct, other):
                raise AssertionError(f'correct-key and {name} outputs are the same')
        if torch.allclose(plain, incorrect):
            raise AssertionError('plain and incorrect-key outputs are the same')
        changed = changed_depth if _is_depth(model) else changed_pixels
        result.changed_plain = changed(correct, plain)
        result.changed_incorrect = changed(correct, incorrect)
        stage = 'checkpoint'
        save_checkpoint({'meta': {'key_protection': Protection.of(model).describe()},
                         'state_dict': weights_to_cpu(sealed_state_dict(model))},
                        str(folder / 'model.pth'))
        torch.save({'inputs': inputs, 'correct': correct}, folder / 'io.pt')
        stage = 'gradients'
        _check_gradients(model, size)
        if test_loop:
            stage = 'test loop'
            run_test_loop(model, data_root, folder / 'test', size)
        result.status = 'ok'
    except Exception as error:  # noqa: BLE001 - every failure is a row of the table
        result.stage, result.reason = stage, _one_line(error)
        if entry.get('needs'):
            result.reason = f"needs {entry['needs']}: {result.reason}"
    result.seconds = round(time.perf_counter() - start, 2)
    return result


def _one_line(error: BaseException) -> str:
    return clean_reason(f'{type(error).__name__}: {error}')


def clean_reason(text: str, limit: int = 240) -> str:
    """One line, without machine-specific paths (mmengine's ``sys.path`` dump), shortened."""
    text = ' '.join(text.split(', the current sys.path is:')[0].split())
    return text if len(text) <= limit else text[:limit - 3] + '...'


def _reload_one(folder: Path, size: int) -> Optional[str]:
    """Build ``folder``'s config, load its checkpoint, compare outputs; the error or None."""
    from mmengine.runner.checkpoint import load_checkpoint
    from mmseg.registry import MODELS
    cfg = family_config(folder, size)
    init_default_scope('mmseg')
    model = MODELS.build(cfg.model).eval()
    load_checkpoint(model, str(folder / 'model.pth'), map_location='cpu', strict=True)
    saved = torch.load(folder / 'io.pt', weights_only=True)
    output = predict_logits(model, saved['inputs'])
    if not torch.allclose(output, saved['correct'], rtol=1e-4, atol=1e-5):
        return (f"reloaded outputs differ (max abs diff "
                f"{(output - saved['correct']).abs().max().item():.3g})")
    return None


def reload_checkpoints(work_dir: Path, families: Sequence[str],
                       size: int = DEFAULT_SIZE) -> Dict[str, Optional[str]]:
    """In one fresh Python process, reload every family's checkpoint and compare outputs.

    Returns:
        dict: family -> None (same outputs) or why not.
    """
    command = [sys.executable, '-m', 'mmseg_keyprotect.testing.sweep', '--reload', str(work_dir),
               '--size', str(size), *families]
    done = subprocess.run(command, capture_output=True, text=True)
    lines = [line for line in done.stdout.splitlines() if line.startswith('{')]
    if done.returncode != 0 or not lines:
        tail = (done.stderr.strip().splitlines() or ['no output'])[-1]
        return {family: f'the reload process failed: {tail}' for family in families}
    return json.loads(lines[-1])


def run_sweep(families: Optional[Sequence[str]] = None,
              work_dir: Optional[Path] = None,
              size: int = DEFAULT_SIZE,
              test_loop: bool = True,
              log: Any = None) -> List[FamilyResult]:
    """Check ``families`` (default: every family mmseg ships) and reload them in a fresh process.

    Args:
        families: family names; None for :func:`list_families`.
        work_dir: where configs, checkpoints and the key go (a temporary
            directory, removed afterwards, when None).
        size: input side in pixels.
        test_loop: also run ``KeyConditionTestLoop`` for each family.
        log: called with each finished :class:`FamilyResult` (progress).

    Returns:
        list[FamilyResult]: one per family, in order.
    """
    from ..datasets import make_synthetic_voc
    from ..keys import SecretKey

    families = list_families() if families is None else list(families)
    with tempfile.TemporaryDirectory(prefix='keyprotect_sweep_') as tmp:
        root = Path(work_dir) if work_dir is not None else Path(tmp)
        root.mkdir(parents=True, exist_ok=True)
        key_file = root / 'owner.key'
        if not key_file.exists():
            SecretKey.generate().save(key_file)
        data_root = make_synthetic_voc(root / 'data', num_train=1, num_val=1,
                                       image_size=(size, size), seed=0)
        results = []
        with warnings.catch_warnings():
            warnings.simplefilter('ignore')
            for family in families:
                results.append(check_family(family, root, key_file, data_root, size, test_loop))
                if log is not None:
                    log(results[-1])
        passed = [r.family for r in results if r.status == 'ok']
        if passed:
            for family, error in reload_checkpoints(root, passed, size).items():
                if error is not None:
                    result = next(r for r in results if r.family == family)
                    result.status, result.stage, result.reason = 'failed', 'reload', error
    return results


#: The columns of :func:`markdown_table`.
TABLE_COLUMNS = ('family', 'config (`mmseg::family/...`)', "points chosen by `points='auto'`",
                 'changed pixels, plain', 'changed pixels, incorrect key', 'status', 'reason')


def _percent(value: Optional[float]) -> str:
    return '-' if value is None else f'{100 * value:.1f} %'


def _fraction(cell: str) -> Optional[float]:
    return None if cell == '-' else round(float(cell.rstrip(' %')) / 100, 4)


def parse_table(text: str) -> List[FamilyResult]:
    """The family rows of a table :func:`markdown_table` wrote, as results (``seconds`` 0).

    Rendering the parsed results again gives the same rows.
    """
    results = []
    for line in text.splitlines():
        if not line.startswith('| '):
            continue
        cells = [c.strip() for c in re.split(r'(?<!\\)\|', line.strip().strip('|'))]
        if len(cells) != len(TABLE_COLUMNS) or cells[0] == TABLE_COLUMNS[0]:
            continue
        family, config, points, plain, incorrect, status, reason = cells
        stage, why = reason.replace('\\|', '|').split(': ', 1) if reason != '-' \
            else (None, None)
        results.append(FamilyResult(family, config.strip('`'), status,
                                    re.findall(r'`([^`]+)`', points), _fraction(plain),
                                    _fraction(incorrect), stage, why))
    return results


def markdown_table(results: Sequence[FamilyResult], header: str = '') -> str:
    """``docs/architectures.md``: one row per family (:data:`TABLE_COLUMNS`)."""
    working = sum(r.status == 'ok' for r in results)
    needing = sum(r.status == NEEDS_EXTRA for r in results)
    summary = f'**{working} of {len(results)} families work.**' + (
        f" {needing} need the families extra (`pip install -e '.[families]'`), which is not "
        'installed here.' if needing else '')
    lines = [header.rstrip(), '', summary, '', '| ' + ' | '.join(TABLE_COLUMNS) + ' |',
             '|' + '---|' * len(TABLE_COLUMNS)]
    for r in results:
        points = '<br>'.join(f'`{p}`' for p in r.points) or '-'
        reason = '-' if r.reason is None else \
            f'{r.stage}: {clean_reason(r.reason)}'.replace('|', '\\|')
        lines.append(f'| {r.family} | `{r.config}` | {points} | {_percent(r.changed_plain)} | '
                     f'{_percent(r.changed_incorrect)} | {r.status} | {reason} |')
    return '\n'.join(lines).lstrip() + '\n'


def _main(argv: Sequence[str]) -> int:
    """``python -m mmseg_keyprotect.testing.sweep --reload WORK_DIR [--size N] FAMILY...``."""
    import argparse

    import mmseg_keyprotect  # noqa: F401  (registers the protected segmentors)
    parser = argparse.ArgumentParser(description=_main.__doc__)
    parser.add_argument('--reload', type=Path, required=True)
    parser.add_argument('--size', type=int, default=DEFAULT_SIZE)
    parser.add_argument('families', nargs='+')
    args = parser.parse_args(argv)
    errors: Dict[str, Optional[str]] = {}
    with warnings.catch_warnings():
        warnings.simplefilter('ignore')
        for family in args.families:
            try:
                errors[family] = _reload_one(args.reload / family, args.size)
            except Exception as error:  # noqa: BLE001
                errors[family] = _one_line(error)
                traceback.print_exc()
    print(json.dumps(errors))
    return 0


if __name__ == '__main__':
    sys.exit(_main(sys.argv[1:]))
