# Attacks on paper 2's Model-3 (FCN-R50-D8, VOC2012 256x256):
# fcn_r50-d8_perm-m3_100e_voc12-256x256.py.
_base_ = ['../_base_/paper_attacks.py']
victim = dict(config='configs/feature_permutation/fcn_r50-d8_perm-m3_100e_voc12-256x256.py',
              work_dir='work_dirs/fcn_r50-d8_perm-m3_100e_voc12-256x256')
# head-only retraining: the layers that consume the permuted feature.
head_modules = [
    'backbone.layer3.0.conv1',
    'backbone.layer3.0.downsample',
]
