# Base of Model-1..6 of paper 2: the baseline protocol with the segmentor swapped for
# KeyProtectedEncoderDecoder. Children name the permuted point in model.protection.points
# (module paths, see mmseg_keyprotect/models/points.py); --cfg-options can change it:
#   --cfg-options "model.protection.points=['backbone.layer2']"
# The key comes from $KP_KEY (export KP_KEY=$(python tools/keygen.py --hex)).
_base_ = ['../../baseline/fcn_r50-d8_100e_voc12-256x256.py']
model = dict(
    type='KeyProtectedEncoderDecoder',
    protection=dict(key=dict(env='KP_KEY'), points=[]))
# Validation reports the correct key as mIoU (so the best checkpoint is the best
# correct-key one); testing reports correct, plain and 100 incorrect keys, as the papers.
val_cfg = dict(type='KeyConditionValLoop')
test_cfg = dict(type='KeyConditionTestLoop', incorrect=100, seed=0)
