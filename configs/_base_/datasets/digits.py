# The 8x8 handwritten digits bundled with scikit-learn (no download), flat 64-vectors.
data = dict(
    train=dict(dataset=dict(type='Digits', split='train', flatten=True),
               dataloader=dict(batch_size=32, shuffle=True)),
    test=dict(dataset=dict(type='Digits', split='test', flatten=True),
              dataloader=dict(batch_size=256)),
)
