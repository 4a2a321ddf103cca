# Demo default, the protection we recommend (docs/security.md): keyed channel permutations at
# all six of paper 2's points (Model-1..6 at once) plus the model's weights encrypted with the
# same key (protection.encrypt_weights).
# - A stolen checkpoint's tensors are random bits without the key: the thief starts from
#   scratch (the attacks in docs/security.md gain nothing from it).
# - If decrypted weights leak (from a keyed process), the six permutations still stand
#   between them and use; of the permutation designs measured they leave an attacker with
#   a few labelled images the least advantage over training from scratch.
# Encryption only acts on state_dict(): training is bit-identical to the unencrypted config.
_base_ = ['./fcn_r18-d8_perm-m1to6_demo.py']
model = dict(protection=dict(encrypt_weights=True))
