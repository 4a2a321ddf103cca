# Demo default, the protection we recommend (docs/security.md): Model-6 feature permutation
# plus the model's weights encrypted with the same key (protection.encrypt_weights). The
# checkpoint's tensors are random bits without the key, so a thief who steals it gains
# nothing over training from scratch; the permutation still makes the key necessary at
# inference. Correct-key accuracy equals the unencrypted model's (encryption only acts on
# state_dict()).
_base_ = ['./fcn_r18-d8_perm-m6_demo.py']
model = dict(protection=dict(encrypt_weights=True))
