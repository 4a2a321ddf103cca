# Attacks on the demo's feature-permutation model M4 (fcn_r18-d8_perm-m4_demo.py).
_base_ = ['../_base_/demo_attacks.py']
victim = dict(config='configs/demo/fcn_r18-d8_perm-m4_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_perm-m4_demo')
# head-only retraining: the layers that consume the permuted feature(s).
head_modules = [
    'backbone.layer4.0.conv1',
    'backbone.layer4.0.downsample',
]
