# Attacks on the demo's recommended protection (fcn_r18-d8_perm-m1to6-encw_demo.py, trained by
# `make demo`): permutations at Model-1..6 with the weights encrypted by the key. The thief
# loads the checkpoint's stored (encrypted) tensors into the unprotected model.
_base_ = ['./perm-m1to6.py']
victim = dict(config='configs/demo/fcn_r18-d8_perm-m1to6-encw_demo.py',
              work_dir='work_dirs/demo/fcn_r18-d8_perm-m1to6-encw_demo')
