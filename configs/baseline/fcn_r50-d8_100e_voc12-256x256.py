# The unprotected baseline of both papers: FCN with a ResNet-50 backbone (mmseg's
# FCN-R50-D8, ImageNet-pretrained ResNetV1c-50, auxiliary FCN head) for the 21 VOC classes,
# trained on VOC 2012 at 256x256 with the papers' schedule (SGDR, 100 epochs, batch 256).
# Paper 1 Table 1 and paper 2 Table I, "Baseline". Every protected config inherits it.
_base_ = [
    'mmseg::_base_/models/fcn_r50-d8.py',
    '../_base_/datasets/voc12_256x256.py',
    'mmseg::_base_/default_runtime.py',
    '../_base_/schedules/schedule_sgdr_100e.py',
]
# The plugin also makes mmseg's tools load checkpoints on torch >= 2.6.
custom_imports = dict(imports=['mmseg_keyprotect', 'mmseg_keyprotect.compat'],
                      allow_failed_imports=False)
# Writes a config with redacted key sources; seals checkpoints (mmseg_keyprotect/engine/runner.py).
runner_type = 'KeyProtectedRunner'

crop_size = (256, 256)
data_preprocessor = dict(size=crop_size)
model = dict(
    data_preprocessor=data_preprocessor,
    decode_head=dict(num_classes=21),
    auxiliary_head=dict(num_classes=21))
# Progress by epoch, to match the epoch-based schedule (mmseg's runtime logs iterations).
log_processor = dict(by_epoch=True)
randomness = dict(seed=0)
