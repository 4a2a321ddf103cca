# Model-6 permutation with the weights encrypted by the key (protection.encrypt_weights): the
# victim of configs/attacks/demo/perm-m6-encw.py. Training is bit-identical to
# fcn_r18-d8_perm-m6_demo.py (encryption only acts on state_dict()).
_base_ = ['./fcn_r18-d8_perm-m6_demo.py']
model = dict(protection=dict(encrypt_weights=True))
