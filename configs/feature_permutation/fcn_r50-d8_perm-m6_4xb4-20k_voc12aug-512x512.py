# Model-6: the input of decode_head.conv_seg, the 512-channel head feature.
_base_ = ['./_base_/fcn_r50-d8_perm_4xb4-20k_voc12aug-512x512.py']
model = dict(protection=dict(points=['decode_head.conv_seg:input']))
