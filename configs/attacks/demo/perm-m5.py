# Attacks on the demo's feature-permutation model M5 (fcn_r18-d8_perm-m5_demo.py).
_base_ = ['../_base_/demo_attacks.py']
victim = dict(config='configs/demo/fcn_r18-d8_perm-m5_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_perm-m5_demo')
# head-only retraining: the layers that consume the permuted feature(s).
# FCNHead concatenates its input with its convs' output (conv_cat).
head_modules = [
    'decode_head.convs.0',
    'decode_head.conv_cat',
]
