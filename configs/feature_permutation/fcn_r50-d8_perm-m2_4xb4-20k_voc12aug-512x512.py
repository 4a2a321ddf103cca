# Model-2: the output of backbone.layer1 (256 channels).
_base_ = ['./_base_/fcn_r50-d8_perm_4xb4-20k_voc12aug-512x512.py']
model = dict(protection=dict(points=['backbone.layer1']))
