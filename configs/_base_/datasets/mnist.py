# MNIST through torchvision (DATASETS falls back to torchvision.datasets). Downloads ~11 MB
# into data/mnist on the first run; needs internet once.
_transform = [dict(type='ToTensor'), dict(type='Normalize', mean=(0.1307, ), std=(0.3081, ))]
data = dict(
    train=dict(dataset=dict(type='MNIST', root='data/mnist', train=True, download=True, transform=_transform),
               dataloader=dict(batch_size=128, shuffle=True, num_workers=2)),
    test=dict(dataset=dict(type='MNIST', root='data/mnist', train=False, download=True, transform=_transform),
              dataloader=dict(batch_size=512, num_workers=2)),
)
