# Attacks on the demo models (configs/demo/, synthetic dataset), run by
# `python tools/attack.py run configs/attacks/demo/<victim>.py`. The attacker has the stolen
# checkpoint and config, not the key, and a random share of the labelled training set
# (`fractions`; 1% = 4 images, 10% = 40). Every attack trains for the same number of
# iterations of 8 images (`budgets`); `scratch` trains the same architecture from random
# initialisation with the same data and budget (what the attacker could do without stealing).
attacks = ['scratch', 'finetune', 'head_only', 'adapter', 'sinkhorn']
fractions = [0.01, 0.1]
budgets = [100]
seed = 0
_sgd = dict(type='SGD', momentum=0.9, weight_decay=0.0005)
optim_wrappers = dict(
    # the demo's own recipe (lr 0.05, poly decay over the budget)
    scratch=dict(type='OptimWrapper', optimizer=dict(_sgd, lr=0.05)),
    # all weights of the stolen model, a fine-tuning learning rate
    finetune=dict(type='OptimWrapper', optimizer=dict(_sgd, lr=0.01)),
    # only the layer(s) right after the protected point(s) (head_modules)
    head_only=dict(type='OptimWrapper', optimizer=dict(_sgd, lr=0.01)),
    # identity-initialised 1x1 convolutions at the protected points, all else frozen
    adapter=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=0.01)),
    # Sinkhorn logits at the protected points, all else frozen; rounded to a permutation
    sinkhorn=dict(type='OptimWrapper', optimizer=dict(type='Adam', lr=0.05)),
    # weight matching (needs victim=dict(..., reference='public.pth')): the stolen weights
    # aligned to the public ones they were fine-tuned from, then fine-tuned like `finetune`
    weight_matching=dict(type='OptimWrapper', optimizer=dict(_sgd, lr=0.01)),
)
# `end` defaults to the budget.
param_schedulers = dict(
    scratch=[dict(type='PolyLR', eta_min=1e-4, power=0.9, begin=0, by_epoch=False)],
    finetune=None, head_only=None, adapter=None, sinkhorn=None, weight_matching=None)
sinkhorn = dict(tau=0.05, iterations=20)
