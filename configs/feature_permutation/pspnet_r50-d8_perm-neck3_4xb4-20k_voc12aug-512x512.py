# PSPNet-R50-D8 with a ChannelPermutationNeck permuting backbone output 3
# (layer4, the tensor of paper 2's Model-5, 2048 channels) before the PSP head.
# The auxiliary head reads output 2 and is not affected. Key from $KP_KEY.
_base_ = ['mmseg::pspnet/pspnet_r50-d8_4xb4-20k_voc12aug-512x512.py']
custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)
# Writes a config with redacted key sources; seals checkpoints (mmseg_keyprotect/engine/runner.py).
runner_type = 'KeyProtectedRunner'
model = dict(
    neck=dict(
        type='ChannelPermutationNeck',
        in_channels=[256, 512, 1024, 2048],
        indices=[3],
        key=dict(env='KP_KEY')))
