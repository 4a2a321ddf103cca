# Demo: multi-point feature permutation, paper 2's points 1 and 6 (the input of
# backbone.layer1 and the input of decode_head.conv_seg), each with its own permutation
# derived from the same key. Evaluated against the attacks in docs/security.md.
_base_ = ['./fcn_r18-d8_perm-m6_demo.py']
model = dict(
    protection=dict(points=['backbone.layer1:input', 'decode_head.conv_seg:input']))
