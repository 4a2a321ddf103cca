# Demo: the SHF M=2 model of fcn_r18-d8_shf-b2_demo.py with its cipher in the data
# preprocessor (BlockCipherSegDataPreProcessor) instead of the data pipeline: the same cipher
# dict, applied to the whole batch on the model's device before normalisation. The model sees
# bit-identical inputs, so checkpoints of either config are tested with either config. The
# pipelines are the baseline's (no cipher).
_base_ = ['./fcn_r18-d8_baseline_demo.py']
# tools/demo.py points KP_DEMO_KEY_FILE at the key it writes; by default, the path below
# (relative to the working directory).
key = dict(file='{{$KP_DEMO_KEY_FILE:work_dirs/demo/owner.key}}')
model = dict(
    data_preprocessor=dict(
        type='BlockCipherSegDataPreProcessor',
        cipher=dict(type='BlockShuffle', block_size=2, key=key, num_channels=3)))
val_cfg = dict(type='KeyConditionValLoop', plain=True)
