# SegFormer-MiT-B0 with the token features of stage 1 permuted: the output of the
# stage's final LayerNorm, backbone.layers.0.2, shaped (N, L, 32) with channels last.
# mmseg ships SegFormer configs for ADE20K and Cityscapes only. Key from $KP_KEY.
_base_ = ['mmseg::segformer/segformer_mit-b0_8xb2-160k_ade20k-512x512.py']
custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)
# Writes a config with redacted key sources; seals checkpoints (mmseg_keyprotect/engine/runner.py).
runner_type = 'KeyProtectedRunner'
model = dict(
    type='KeyProtectedEncoderDecoder',
    protection=dict(
        key=dict(env='KP_KEY'),
        points=[dict(path='backbone.layers.0.2', where='output', channel_dim=-1)]))
