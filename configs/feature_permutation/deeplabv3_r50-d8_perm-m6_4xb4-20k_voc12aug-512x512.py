# DeepLabV3-R50-D8 with the Model-6 point of paper 2: the input of the head's
# conv_seg, placed by the head wrapper. Its key purpose is 'decode_head.conv_seg:input',
# the same as the segmentor-level point of that name. Key from $KP_KEY.
_base_ = ['mmseg::deeplabv3/deeplabv3_r50-d8_4xb4-20k_voc12aug-512x512.py']
custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)
# Writes a config with redacted key sources; seals checkpoints (mmseg_keyprotect/engine/runner.py).
runner_type = 'KeyProtectedRunner'
model = dict(
    decode_head=dict(
        _delete_=True,
        type='KeyProtectedHead',
        head={{_base_.model.decode_head}},
        key=dict(env='KP_KEY'),
        points=['conv_seg:input']))
