# torchvision's resnet18 through the MODELS fall-back (random init, no download).
model = dict(type='resnet18', num_classes=10)
loss = dict(type='CrossEntropyLoss')
