# Attacks on the demo's block-cipher model (SHF, 2x2 blocks; fcn_r18-d8_shf-b2_demo.py). The
# attacker feeds plain images; adapters act on 2x2 blocks of the network's input (a 12x12
# linear map per block for `adapter`, a 12x12 soft permutation for `sinkhorn`).
_base_ = ['../_base_/demo_attacks.py']
victim = dict(config='configs/demo/fcn_r18-d8_shf-b2_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_shf-b2_demo')
# head-only retraining: the first convolution, which sees the (un)encrypted image.
head_modules = ['backbone.stem.0']
