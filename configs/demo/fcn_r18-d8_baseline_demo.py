# Unprotected baseline of the demo: FCN on a half-width ResNetV1c-18 (dilated, output
# stride 8; channels 32-64-128-256), BN, no pretrained weights, trained from scratch on the
# synthetic dataset (python tools/make_dataset.py) on a CPU in about two minutes.
_base_ = [
    'mmseg::_base_/models/fcn_r50-d8.py',
    'mmseg::_base_/default_runtime.py',
    './_base_/datasets/synthetic_voc.py',
    './_base_/schedules/schedule_demo.py',
]
custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)
# Writes a config with redacted key sources; seals checkpoints (mmseg_keyprotect/engine/runner.py).
runner_type = 'KeyProtectedRunner'

crop_size = (64, 64)
num_classes = 6
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(depth=18, stem_channels=32, base_channels=32, norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=256, channels=64, num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=dict(
        in_channels=128, channels=32, num_classes=num_classes, norm_cfg=norm_cfg))
# CPU: no cuDNN; gloo for multi-process runs (tools/dist_train.sh CONFIG 2).
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
# mmengine's default DDP wrapper passes device_ids=[LOCAL_RANK], which CPU modules reject;
# device_ids=None means "the module's own device" and works on CPU and on one GPU per rank.
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False)
randomness = dict(seed=0)
