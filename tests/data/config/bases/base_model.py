# A base providing a model and an optimizer.
model = dict(type='MLP', in_features=64, hidden=[32, 16], num_classes=10, act=dict(type='ReLU'))
optimizer = dict(type='SGD', lr=0.1, momentum=0.9)
