# Base of every configs/stanford_background/ config (the children add only their protection;
# tools/dev/make_configs.py writes them): FCN on a quarter-width ResNetV1c-18 (channels
# 16-32-64-128), dilated to output stride 16 (layer4 dilated; "d16"), no auxiliary head, BN,
# trained FROM SCRATCH (no pretrained weights can be downloaded here) on the Stanford
# Background Dataset at 128x96, on a CPU: 6000 iterations of 8 images (96 epochs of the 500
# training images), where the validation curve flattens (docs/stanford_background.md).
# One training step costs ~0.09 s of one CPU core, half the output-stride-8 network with an
# auxiliary head of the first measured run (0.18 s, which reached no plateau in 3000
# iterations): ~9 minutes of training per run.
# Validation (the 72-image selection split) reports the correct key and plain every
# val_interval iterations; the best correct-key checkpoint is kept. Testing (the official
# 143-image val list) reports correct, plain and 100 incorrect keys (KeyConditionTestLoop).
_base_ = [
    'mmseg::_base_/models/fcn_r50-d8.py',
    'mmseg::_base_/default_runtime.py',
    '../../_base_/datasets/stanford_background.py',
]
custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)
# Writes a config with redacted key sources; seals checkpoints (mmseg_keyprotect/engine/runner.py).
runner_type = 'KeyProtectedRunner'

crop_size = (96, 128)
num_classes = 8
norm_cfg = dict(type='BN', requires_grad=True)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    pretrained=None,
    backbone=dict(depth=18, stem_channels=16, base_channels=16, strides=(1, 2, 2, 1),
                  dilations=(1, 1, 1, 2), norm_cfg=norm_cfg),
    decode_head=dict(
        in_channels=128, channels=32, num_classes=num_classes, norm_cfg=norm_cfg),
    auxiliary_head=None)

# Schedule: SGD with a short warm-up and poly decay, iteration based (batch 8).
optimizer = dict(type='SGD', lr=0.05, momentum=0.9, weight_decay=0.0005)
optim_wrapper = dict(type='OptimWrapper', optimizer=optimizer, clip_grad=None)
max_iters = 6000
val_interval = 600
param_scheduler = [
    dict(type='LinearLR', start_factor=0.1, begin=0, end=50, by_epoch=False),
    dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=50, end=max_iters, by_epoch=False),
]
train_cfg = dict(type='IterBasedTrainLoop', max_iters=max_iters, val_interval=val_interval)
val_cfg = dict(type='KeyConditionValLoop', plain=True)
test_cfg = dict(type='KeyConditionTestLoop', incorrect=100, seed=0)
default_hooks = dict(
    timer=dict(type='IterTimerHook'),
    logger=dict(type='LoggerHook', interval=50, log_metric_by_epoch=False),
    param_scheduler=dict(type='ParamSchedulerHook'),
    checkpoint=dict(
        type='CheckpointHook',
        by_epoch=False,
        interval=val_interval,
        max_keep_ckpts=1,
        save_best='mIoU',
        rule='greater'),
    sampler_seed=dict(type='DistSamplerSeedHook'),
    visualization=dict(type='SegVisualizationHook'))
# CPU: no cuDNN; gloo for multi-process runs.
env_cfg = dict(cudnn_benchmark=False, dist_cfg=dict(backend='gloo'))
model_wrapper_cfg = dict(
    type='MMDistributedDataParallel', device_ids=None, broadcast_buffers=False)
randomness = dict(seed=0)
# The owner key: a file (tools/keygen.py), never the key itself; tools/reproduce.py points
# KP_KEY_FILE at the one it writes.
key = dict(file='{{$KP_KEY_FILE:work_dirs/stanford_background/owner.key}}')
