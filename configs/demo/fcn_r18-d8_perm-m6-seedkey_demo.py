# Demo victim of the key-search attack (docs/security.md): Model-6 protected with a key made
# from a small integer seed, as the papers' code does (a numpy seed). Such a key warns
# (WeakKeyWarning) and is recovered by `tools/attack.py key-search`; never do this for a
# model you want to protect, use tools/keygen.py.
_base_ = ['./fcn_r18-d8_perm-m6_demo.py']
model = dict(protection=dict(key=dict(_delete_=True, seed=7361, published=True)))
