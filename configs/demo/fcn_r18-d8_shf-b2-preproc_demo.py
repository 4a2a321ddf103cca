# Demo: the SHF M=2 model of fcn_r18-d8_shf-b2_demo.py with its cipher moved from the data
# pipeline into the data preprocessor (BlockCipherSegDataPreProcessor): the same cipher dict,
# applied to the whole batch on the model's device before normalisation. The model sees
# bit-identical inputs, so checkpoints of either config are tested with either config.
_base_ = ['./fcn_r18-d8_shf-b2_demo.py']
crop_size = (64, 64)
train_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='LoadAnnotations'),
    dict(type='RandomResize', scale=crop_size, ratio_range=(1.0, 2.0), keep_ratio=True),
    dict(type='RandomCrop', crop_size=crop_size, cat_max_ratio=0.75),
    dict(type='RandomFlip', prob=0.5),
    dict(type='PackSegInputs'),
]
test_pipeline = [
    dict(type='LoadImageFromFile'),
    dict(type='Resize', scale=crop_size, keep_ratio=True),
    dict(type='LoadAnnotations'),
    dict(type='PackSegInputs'),
]
model = dict(data_preprocessor=dict(type='BlockCipherSegDataPreProcessor',
                                    cipher={{_base_.cipher}}))
train_dataloader = dict(dataset=dict(pipeline=train_pipeline))
val_dataloader = dict(dataset=dict(pipeline=test_pipeline))
test_dataloader = val_dataloader
