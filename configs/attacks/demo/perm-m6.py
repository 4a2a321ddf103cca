# Attacks on the demo's feature-permutation model M6 (fcn_r18-d8_perm-m6_demo.py).
_base_ = ['../_base_/demo_attacks.py']
victim = dict(config='configs/demo/fcn_r18-d8_perm-m6_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_perm-m6_demo')
# head-only retraining: the layers that consume the permuted feature(s).
head_modules = [
    'decode_head.conv_seg',
]
