# Generated, learnable classification data (tests, benchmarks).
data = dict(
    train=dict(dataset=dict(type='SyntheticClassification', num_samples=1024, num_features=16,
                            num_classes=4, seed=0, split='train'),
               dataloader=dict(batch_size=32, shuffle=True)),
    test=dict(dataset=dict(type='SyntheticClassification', num_samples=256, num_features=16,
                           num_classes=4, seed=0, split='test'),
              dataloader=dict(batch_size=256)),
)
