# Attacks on Model-6 with its weights encrypted by the key (fcn_r18-d8_perm-m6-encw_demo.py):
# the thief loads the checkpoint's stored (encrypted) tensors into the unprotected model.
_base_ = ['./perm-m6.py']
victim = dict(config='configs/demo/fcn_r18-d8_perm-m6-encw_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_perm-m6-encw_demo')
