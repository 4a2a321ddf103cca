# Demo: the baseline FCN protected by a keyed channel permutation at paper 2's point
# 1, the input of backbone.layer1 (stem output after the max-pool). Used by the attack
# suite (docs/security.md).
_base_ = ['./fcn_r18-d8_perm-m6_demo.py']
model = dict(protection=dict(points=['backbone.layer1:input']))
