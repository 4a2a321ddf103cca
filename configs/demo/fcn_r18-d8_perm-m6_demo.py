# Demo: the baseline FCN protected by a keyed permutation of the decode head's feature
# (paper 2, Model-6: the input of decode_head.conv_seg). `make demo` writes the key file
# with tools/keygen.py; the config names the file, never the key.
_base_ = ['./fcn_r18-d8_baseline_demo.py']
# tools/demo.py points KP_DEMO_KEY_FILE at the key it writes; by default, the path below
# (relative to the working directory).
key = dict(file='{{$KP_DEMO_KEY_FILE:work_dirs/demo/owner.key}}')
model = dict(
    type='KeyProtectedEncoderDecoder',
    protection=dict(key=key, points=['decode_head.conv_seg:input']))
# Validation during training reports the correct key (best checkpoint by correct-key mIoU)
# and plain; tools/test.py reports correct, plain and 100 incorrect keys.
val_cfg = dict(type='KeyConditionValLoop', plain=True)
