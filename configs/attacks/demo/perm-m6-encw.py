# Attacks on the demo's recommended protection (fcn_r18-d8_perm-m6-encw_demo.py): Model-6
# permutation with the weights encrypted by the key. The thief loads the checkpoint's
# stored tensors (encrypted) into the unprotected model.
_base_ = ['./perm-m6.py']
victim = dict(config='configs/demo/fcn_r18-d8_perm-m6-encw_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_perm-m6-encw_demo')
