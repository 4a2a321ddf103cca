# The Stanford Background Dataset (Gould et al., ICCV 2009): 715 outdoor photographs of about
# 320x240, eight classes, "unknown" ignored (255). Prepare it with
#   python tools/prepare_stanford_background.py SOURCE --out data/stanford_background
# (mmseg layout; the fixed lists in ../splits/stanford_background_*.txt: train 500, val 72 for
# checkpoint selection, both from the official training list; test 143, the official val list).
#
# Every image is resized to 128x96 (W x H, the photographs' 4:3), small enough to train from
# scratch on a CPU in minutes; every block size of the configs (4, 8, 16) divides it. The
# protocol otherwise follows the papers' (configs/_base_/datasets/voc12_256x256.py): random
# resized crop (each side 1-2x, then a 128x96 crop) and horizontal flip for training, a plain
# resize for testing; ciphers go just before PackSegInputs (train index 5, val/test index 3).
dataset_type = 'StanfordBackgroundDataset'
data_root = 'data/stanford_background'
crop_size = (96, 128)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=[(128, 96), (256, 192)], keep_ratio=False),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# Masks are loaded after Resize, as in mmseg: the 128x96 prediction is resized back to the
# photograph's own size and scored against its original mask.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=(128, 96), keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
train_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='InfiniteSampler', shuffle=True),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/train', seg_map_path='ann_dir/train'),
        pipeline=train_pipeline))
val_dataloader = dict(
    batch_size=8,
    num_workers=1,
    persistent_workers=True,
    sampler=dict(type='DefaultSampler', shuffle=False),
    dataset=dict(
        type=dataset_type,
        data_root=data_root,
        data_prefix=dict(img_path='img_dir/val', seg_map_path='ann_dir/val'),
        pipeline=test_pipeline))
# The same loader on the test split (the official val list).
test_dataloader = dict(
    val_dataloader,
    dataset=dict(
        val_dataloader['dataset'],
        data_prefix=dict(img_path='img_dir/test', seg_map_path='ann_dir/test')))
# Both mean IoUs: mmseg's pooled one (mIoU) and paper 2's per-image one (mIoU_per_image).
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']), dict(type='PerImageIoUMetric')]
test_evaluator = val_evaluator
