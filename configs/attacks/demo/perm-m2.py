# Attacks on the demo's feature-permutation model M2 (fcn_r18-d8_perm-m2_demo.py).
_base_ = ['../_base_/demo_attacks.py']
victim = dict(config='configs/demo/fcn_r18-d8_perm-m2_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_perm-m2_demo')
# head-only retraining: the layers that consume the permuted feature(s).
head_modules = [
    'backbone.layer2.0.conv1',
    'backbone.layer2.0.downsample',
]
