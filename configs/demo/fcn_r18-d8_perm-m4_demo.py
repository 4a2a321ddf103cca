# Demo: the baseline FCN protected by a keyed channel permutation at paper 2's point
# 4, the output of backbone.layer3 (also the auxiliary head's input). Used by the attack
# suite (docs/security.md).
_base_ = ['./fcn_r18-d8_perm-m6_demo.py']
model = dict(protection=dict(points=['backbone.layer3']))
