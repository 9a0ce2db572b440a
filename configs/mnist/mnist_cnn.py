# SimpleCNN on MNIST through torchvision (downloads the data once).
_base_ = ['../_base_/models/simple_cnn.py', '../_base_/datasets/mnist.py',
          '../_base_/schedules/adamw_cosine_10e.py', '../_base_/default_runtime.py']
model = dict(image_size=28, channels=[32, 64, 64], pool=[False, True, True])
optimizer = dict(lr=1e-3)
max_epochs = 5
