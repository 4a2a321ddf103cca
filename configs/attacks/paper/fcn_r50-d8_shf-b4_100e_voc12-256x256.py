# Attacks on paper 1's SHF with 4x4 blocks (FCN-R50-D8, VOC2012 256x256):
# fcn_r50-d8_shf-b4_100e_voc12-256x256.py.
_base_ = ['../_base_/paper_attacks.py']
victim = dict(config='configs/block_encryption/fcn_r50-d8_shf-b4_100e_voc12-256x256.py',
              work_dir='work_dirs/fcn_r50-d8_shf-b4_100e_voc12-256x256')
# head-only retraining: the first convolution, which sees the (un)encrypted image.
head_modules = ['backbone.stem.0']
