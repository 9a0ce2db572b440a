model = dict(type='MLP', in_features=64, hidden=[128, 64], num_classes=10)
loss = dict(type='CrossEntropyLoss')
