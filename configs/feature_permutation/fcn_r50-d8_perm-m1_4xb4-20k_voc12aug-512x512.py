# Model-1: the stem output, i.e. the input of backbone.layer1 (64 channels).
_base_ = ['./_base_/fcn_r50-d8_perm_4xb4-20k_voc12aug-512x512.py']
model = dict(protection=dict(points=['backbone.layer1:input']))
