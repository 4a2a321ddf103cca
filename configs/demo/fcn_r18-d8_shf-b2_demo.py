# Demo: the baseline FCN trained and tested on block-wise encrypted images (paper 1, SHF
# with 2x2 blocks, the most accurate setting of its Table 1; with 4x4 blocks the demo model
# reached only ~0.65-0.88x the baseline's mIoU in 1200 iterations). The cipher runs after
# the geometric augmentation, before packing.
_base_ = ['./fcn_r18-d8_baseline_demo.py']
# tools/demo.py points KP_DEMO_KEY_FILE at the key it writes; by default, the path below
# (relative to the working directory).
key = dict(file='{{$KP_DEMO_KEY_FILE:work_dirs/demo/owner.key}}')
cipher = dict(type='BlockShuffle', block_size=2, key=key, num_channels=3)
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=crop_size, ratio_range=(1.0, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    cipher,
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations'),
    cipher,
    dict(type='PackSegInputs'),
]
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
val_cfg = dict(type='KeyConditionValLoop', plain=True)
