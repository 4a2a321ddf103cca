# Attacks on the paper-protocol models (configs/feature_permutation/, configs/block_encryption/:
# FCN-R50-D8, VOC2012 at 256x256, 1318 training images), run on a GPU with
# `python tools/attack.py run configs/attacks/paper/<victim>.py`. The attacker holds 1% (13)
# or 10% (132) of the training images and trains for the same number of iterations with
# the victim config's batch size (32 per process); `scratch` is the same architecture from
# ImageNet-free random initialisation, as the papers train it. Not run in this project: no
# GPU was lent to it (docs/security.md has the demo-protocol results).
_base_ = ['./demo_attacks.py']
budgets = [500]
# The papers' learning rate for training from scratch; the attacks keep the demo's.
optim_wrappers = dict(scratch=dict(optimizer=dict(lr=0.1)))
