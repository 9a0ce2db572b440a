# Characters of the pydoc topics text that ships with Python; 90% train / 10% test.
data = dict(
    train=dict(dataset=dict(type='CharText', split='train', block_size=64),
               dataloader=dict(batch_size=32, shuffle=True, drop_last=True)),
    test=dict(dataset=dict(type='CharText', split='test', block_size=64),
              dataloader=dict(batch_size=128)),
)
