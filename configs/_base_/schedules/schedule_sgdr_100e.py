# The schedule of both papers: SGD with lr 0.1, momentum 0.9 and weight decay 0.005,
# batch 256, 100 epochs, cosine annealing with warm restarts (SGDR) every 10 epochs down
# to 1e-4. mmseg's 20k schedule is inherited for its hooks; its optimizer, iteration-based
# loop and poly schedule are replaced.
_base_ = ['mmseg::_base_/schedules/schedule_20k.py']

optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=0.005)
optim_wrapper = dict(optimizer=optimizer)
# Ten 10-epoch cycles, each restarting at the full lr. Stepped every iteration
# (convert_to_iter_based), so the cosine is smooth within an epoch as in SGDR.
# train_cfg.max_epochs, `periods` and `end` go together: change all three.
param_scheduler = [
    dict(
        type='CosineRestartLR',
        periods=[10] * 10,
        restart_weights=[1] * 10,
        eta_min=1e-4,
        by_epoch=True,
        begin=0,
        end=100,
        convert_to_iter_based=True)
]
# Validate on the development split after every epoch (146 images, cheap).
train_cfg = dict(_delete_=True, type='EpochBasedTrainLoop', max_epochs=100, val_interval=1)
# lr 0.1 is for a total batch of 256. With another total (GPUs x train_dataloader.batch_size),
# either keep 256 with optim_wrapper.accumulative_counts, or scale lr linearly with
# --cfg-options auto_scale_lr.enable=True (lr = 0.1 x total / 256).
auto_scale_lr = dict(enable=False, base_batch_size=256)
# The papers keep the checkpoint with the lowest development loss; mmseg's validation
# computes metrics, not the loss, so we keep the one with the best development mIoU
# instead (correct key for protected models: KeyConditionValLoop reports it as mIoU).
# 1318 / 256 gives 6 iterations per epoch: log about once per epoch.
default_hooks = dict(
    logger=dict(interval=5, log_metric_by_epoch=True),
    checkpoint=dict(
        by_epoch=True, interval=10, max_keep_ckpts=2, save_best='mIoU', rule='greater'))
