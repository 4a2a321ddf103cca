# PASCAL VOC 2012 as both papers use it: the 1464 segmentation training images split
# 1318 train / 146 development, testing on the 1449 val images, every image resized to
# 256x256 because block-wise encryption needs one input size that every block size of
# paper 1 (2..256) divides. mmseg's dataset config gives PascalVOCDataset (21 classes),
# data_root data/VOCdevkit/VOC2012, the folders and the IoU evaluator.
_base_ = ['mmseg::_base_/datasets/pascal_voc12.py']

crop_size = (256, 256)
# Random resized crop + horizontal flip, ending at exactly 256x256. RandomResize with
# keep_ratio=False scales each side independently to 256..512 px: the papers' resize to
# 256x256 and a 1-2x zoom per side in one interpolation. RandomCrop then cuts 256x256 out
# of it: together a crop of 1/4 to all of the image, aspect ratio 1/2..2, resized to
# 256x256. No photometric distortion: the papers name only these two augmentations.
# Block-encryption configs insert the cipher at index 5, just before PackSegInputs.
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=[(256, 256), (512, 512)], keep_ratio=False),
    dict(type='RandomCrop', crop_size=crop_size),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
# Masks are loaded after Resize, as in mmseg: the 256x256 prediction is resized back to
# the image's own size and scored against the original mask (the papers score masks
# resized to 256x256; see docs/reproduction.md). Ciphers go at index 3.
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=False),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
# The split lists ship with the configs (tools/dev/make_voc_splits.py made them from VOC's
# ImageSets/Segmentation/train.txt); {{fileDirname}} is this file's folder, so the path
# is absolute and works from any working directory. The test set is VOC's own val list.
train_dataloader = dict(
    # Per GPU: the papers' batch of 256 is 8 GPUs x 32 (tools/dist_train.sh CONFIG 8).
    # On fewer GPUs see auto_scale_lr in the schedule.
    batch_size=32,
    num_workers=4,
    # The epoch-based loop needs a sampler that ends (mmseg's VOC config has an
    # InfiniteSampler for its iteration-based schedules).
    sampler=dict(type='DefaultSampler', shuffle=True),
    dataset=dict(
        ann_file='{{fileDirname}}/../splits/voc12_train1318.txt', pipeline=train_pipeline))
# 256x256 inputs can be batched for evaluation.
val_dataloader = dict(
    batch_size=16,
    dataset=dict(ann_file='{{fileDirname}}/../splits/voc12_dev146.txt',
                 pipeline=test_pipeline))
test_dataloader = dict(
    batch_size=16,
    dataset=dict(ann_file='ImageSets/Segmentation/val.txt', pipeline=test_pipeline))
# Both mean IoUs: mmseg's pooled one (mIoU: intersections and unions summed over the test
# set) and paper 2's (mIoU_per_image: the mean IoU of each image, averaged over images).
# The papers' numbers are comparable to mIoU_per_image; see docs/reproduction.md.
val_evaluator = [dict(type='IoUMetric', iou_metrics=['mIoU']), dict(type='PerImageIoUMetric')]
test_evaluator = val_evaluator
