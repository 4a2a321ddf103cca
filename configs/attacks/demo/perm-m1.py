# Attacks on the demo's feature-permutation model M1 (fcn_r18-d8_perm-m1_demo.py).
_base_ = ['../_base_/demo_attacks.py']
victim = dict(config='configs/demo/fcn_r18-d8_perm-m1_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_perm-m1_demo')
# head-only retraining: the layers that consume the permuted feature(s).
# layer1.0 has an identity shortcut, so retraining its conv1 cannot undo the permutation on
# the shortcut path.
head_modules = [
    'backbone.layer1.0.conv1',
]
