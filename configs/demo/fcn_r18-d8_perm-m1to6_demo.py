# Demo: feature permutation at all six of paper 2's points (Model-1..6 at once), each with
# its own permutation derived from the same key. Evaluated against the attacks in
# docs/security.md.
_base_ = ['./fcn_r18-d8_perm-m6_demo.py']
model = dict(
    protection=dict(points=[
        'backbone.layer1:input', 'backbone.layer1', 'backbone.layer2', 'backbone.layer3',
        'backbone.layer4', 'decode_head.conv_seg:input'
    ]))
