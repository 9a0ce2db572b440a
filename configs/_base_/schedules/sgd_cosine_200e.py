# The classic CIFAR recipe: SGD with momentum, cosine decay, 200 epochs.
optimizer = dict(type='SGD', lr=0.1, momentum=0.9, weight_decay=5e-4, nesterov=True)
lr_scheduler = dict(type='CosineAnnealingWarmupLR', warmup_epochs=1, eta_min=0.0)
max_steps = None  # stop early after this many optimizer steps
test_interval = 1   # evaluate every N epochs
max_epochs = 200
