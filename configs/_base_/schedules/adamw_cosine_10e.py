# AdamW with one warm-up epoch and cosine decay over the whole run (total_steps computed).
optimizer = dict(type='AdamW', lr=3e-3, weight_decay=1e-4)
lr_scheduler = dict(type='CosineAnnealingWarmupLR', warmup_epochs=1, eta_min=1e-5)
max_steps = None  # stop early after this many optimizer steps
test_interval = 1   # evaluate every N epochs
max_epochs = 10
