model = dict(type='SimpleCNN', in_channels=1, num_classes=10, channels=[32, 64], image_size=8, hidden=128)
loss = dict(type='CrossEntropyLoss')
