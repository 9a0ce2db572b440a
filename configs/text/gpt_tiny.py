# A 2-layer character GPT on the pydoc topics text shipped with Python. The test loss falls
# well below the unigram entropy of the characters (about 3.1 nats) within a few CPU minutes.
_base_ = ['../_base_/models/tiny_gpt.py', '../_base_/datasets/char_text.py',
          '../_base_/default_runtime.py']
optimizer = dict(type='AdamW', lr=3e-3, weight_decay=0.01)
lr_scheduler = dict(type='CosineAnnealingWarmupLR', warmup_epochs=0.5, eta_min=1e-4)
clip_grad_norm = 1.0
max_epochs = 4
max_steps = None
test_interval = 1
hooks = [
    dict(type='LossHook'),
    dict(type='LogMetricByEpochHook'),
    dict(type='TensorboardHook'),
    dict(type='SaveCheckpointHook', interval=1),
]
