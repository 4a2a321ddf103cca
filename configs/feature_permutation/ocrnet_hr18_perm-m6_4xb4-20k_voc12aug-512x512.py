# OCRNet-HRNetV2p-W18 (a CascadeEncoderDecoder) with the Model-6 point of paper 2
# in its final stage: the input of the OCR head's conv_seg (512 channels).
# Key from $KP_KEY.
_base_ = ['mmseg::ocrnet/ocrnet_hr18_4xb4-20k_voc12aug-512x512.py']
custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)
# Writes a config with redacted key sources; seals checkpoints (mmseg_keyprotect/engine/runner.py).
runner_type = 'KeyProtectedRunner'
model = dict(
    type='KeyProtectedCascadeEncoderDecoder',
    protection=dict(key=dict(env='KP_KEY'), points=['decode_head.1.conv_seg:input']))
