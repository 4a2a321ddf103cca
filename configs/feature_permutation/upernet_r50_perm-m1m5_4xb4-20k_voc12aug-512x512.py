# UPerNet-R50 with two points of paper 2 at once, placed by the backbone wrapper:
# the stem output (input of layer1, Model-1) and the output of layer4 (Model-5).
# Each point has its own permutation. Key from $KP_KEY.
_base_ = ['mmseg::upernet/upernet_r50_4xb4-20k_voc12aug-512x512.py']
custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)
# Writes a config with redacted key sources; seals checkpoints (mmseg_keyprotect/engine/runner.py).
runner_type = 'KeyProtectedRunner'
model = dict(
    backbone=dict(
        _delete_=True,
        type='KeyProtectedBackbone',
        backbone={{_base_.model.backbone}},
        key=dict(env='KP_KEY'),
        points=['layer1:input', 'layer4']))
