# CIFAR-10 through torchvision (DATASETS falls back to torchvision.datasets). Downloads ~170 MB
# into data/cifar10 on the first run; needs internet once.
_normalize = dict(type='Normalize', mean=(0.4914, 0.4822, 0.4465), std=(0.2470, 0.2435, 0.2616))
data = dict(
    train=dict(dataset=dict(type='CIFAR10', root='data/cifar10', train=True, download=True,
                            transform=[dict(type='RandomCrop', size=32, padding=4),
                                       dict(type='RandomHorizontalFlip'),
                                       dict(type='ToTensor'), _normalize]),
               dataloader=dict(batch_size=128, shuffle=True, num_workers=4, drop_last=True)),
    test=dict(dataset=dict(type='CIFAR10', root='data/cifar10', train=False, download=True,
                           transform=[dict(type='ToTensor'), _normalize]),
              dataloader=dict(batch_size=512, num_workers=4)),
)
