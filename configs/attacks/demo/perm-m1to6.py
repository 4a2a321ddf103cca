# Attacks on the demo's feature-permutation model M1TO6 (fcn_r18-d8_perm-m1to6_demo.py).
_base_ = ['../_base_/demo_attacks.py']
victim = dict(config='configs/demo/fcn_r18-d8_perm-m1to6_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_perm-m1to6_demo')
# head-only retraining: the layers that consume the permuted feature(s).
head_modules = [
    'backbone.layer1.0.conv1',
    'backbone.layer2.0.conv1',
    'backbone.layer2.0.downsample',
    'backbone.layer3.0.conv1',
    'backbone.layer3.0.downsample',
    'backbone.layer4.0.conv1',
    'backbone.layer4.0.downsample',
    'decode_head.convs.0',
    'decode_head.conv_cat',
    'decode_head.conv_seg',
]
