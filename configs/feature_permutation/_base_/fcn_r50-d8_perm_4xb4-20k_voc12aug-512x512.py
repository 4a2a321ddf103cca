# FCN-R50-D8 with keyed feature-map permutation (paper 2): mmseg's own config,
# with the segmentor swapped for KeyProtectedEncoderDecoder. Children name the
# point(s) to permute in `model.protection.points` (module paths, see
# mmseg_keyprotect/models/points.py). The key is read from $KP_KEY
# (export KP_KEY=$(python tools/keygen.py --hex)); configs never hold key material.
_base_ = ['mmseg::fcn/fcn_r50-d8_4xb4-20k_voc12aug-512x512.py']
custom_imports = dict(imports=['mmseg_keyprotect'], allow_failed_imports=False)
model = dict(
    type='KeyProtectedEncoderDecoder',
    protection=dict(key=dict(env='KP_KEY'), points=[]))
