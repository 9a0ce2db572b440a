# A tiny run for tests: synthetic data, an MLP, two epochs of four steps.
model = dict(type='MLP', in_features=8, hidden=[16], num_classes=3)
loss = dict(type='CrossEntropyLoss')
optimizer = dict(type='SGD', lr=0.1, momentum=0.9)
lr_scheduler = dict(type='CosineAnnealingWarmupLR', warmup_epochs=1)
data = dict(
    train=dict(dataset=dict(type='SyntheticClassification', num_samples=64, num_features=8, num_classes=3),
               dataloader=dict(batch_size=16, shuffle=True)),
    test=dict(dataset=dict(type='SyntheticClassification', num_samples=32, num_features=8, num_classes=3,
                           split='test'),
              dataloader=dict(batch_size=32)),
)
hooks = [dict(type='LossHook'), dict(type='AccuracyHook'), dict(type='LogMetricByEpochHook'),
         dict(type='SaveCheckpointHook', interval=1)]
max_epochs = 2
seed = 3
