# Attacks on the demo's FFX block-cipher model with 4x4 blocks
# (fcn_r18-d8_ffx-b4_demo.py).
# Adapters act on 4x4 blocks of the network's input (48x48 maps).
_base_ = ['../_base_/demo_attacks.py']
victim = dict(config='configs/demo/fcn_r18-d8_ffx-b4_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_ffx-b4_demo')
# head-only retraining: the first convolution, which sees the (un)encrypted image.
head_modules = ['backbone.stem.0']
