# torchvision's resnet18 on CIFAR-10 (downloads the data once; use a GPU).
_base_ = ['../_base_/models/resnet18.py', '../_base_/datasets/cifar10.py',
          '../_base_/schedules/sgd_cosine_200e.py', '../_base_/default_runtime.py']
amp = 'bf16'
