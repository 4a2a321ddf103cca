# Attacks on paper 2's Model-5 (FCN-R50-D8, VOC2012 256x256):
# fcn_r50-d8_perm-m5_100e_voc12-256x256.py.
_base_ = ['../_base_/paper_attacks.py']
victim = dict(config='configs/feature_permutation/fcn_r50-d8_perm-m5_100e_voc12-256x256.py',
              work_dir='work_dirs/fcn_r50-d8_perm-m5_100e_voc12-256x256')
# head-only retraining: the layers that consume the permuted feature.
head_modules = [
    'decode_head.convs.0',
    'decode_head.conv_cat',
]
