model = dict(type='MLP')
optimizer = dict(type='SGD', lr=0.1
max_epochs = 3
