# Base of the block-encryption configs (paper 1; paper 2 Table II): the baseline protocol,
# evaluated under key conditions. The children (tools/dev/make_configs.py writes them) put one
# keyed block cipher in each pipeline, after the geometric augmentation and before
# PackSegInputs, always at the same index, so --cfg-options can reach it:
#   train_dataloader.dataset.pipeline.5  (train, 256x256 random resized crop + flip)
#   val_dataloader.dataset.pipeline.3    (development split, resized to 256x256)
#   test_dataloader.dataset.pipeline.3   (VOC val, resized to 256x256)
# e.g. 8x8 NP blocks from the SHF 4x4 config:
#   --cfg-options train_dataloader.dataset.pipeline.5.type=BlockNegPos \
#       train_dataloader.dataset.pipeline.5.block_size=8 (and the same for .3 of val and test)
# The key comes from $KP_KEY (export KP_KEY=$(python tools/keygen.py --hex)).
_base_ = ['../../baseline/fcn_r50-d8_100e_voc12-256x256.py']
# Validation reports the correct key as mIoU (so the best checkpoint is the best
# correct-key one); testing reports correct, plain and 100 incorrect keys, as the papers.
val_cfg = dict(type='KeyConditionValLoop')
test_cfg = dict(type='KeyConditionTestLoop', incorrect=100, seed=0)
