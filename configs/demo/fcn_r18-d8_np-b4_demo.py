# Demo victim of the attack suite (docs/security.md): the baseline FCN trained on images
# encrypted with paper 1's negative/positive flipping (NP), 4x4 blocks, in the data
# preprocessor (the same cipher dict as in a pipeline; see fcn_r18-d8_shf-b2-preproc_demo.py).
_base_ = ['./fcn_r18-d8_shf-b2-preproc_demo.py']
model = dict(
    data_preprocessor=dict(
        cipher=dict(
            _delete_=True, type='BlockNegPos', block_size=4, key={{_base_.key}}, num_channels=3)))
