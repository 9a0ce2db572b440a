# The README's main job: a small CNN on the 8x8 digits, >= 97% test accuracy in seconds on 2 CPU cores.
_base_ = ['../_base_/models/simple_cnn.py', '../_base_/datasets/digits_image.py',
          '../_base_/schedules/adamw_cosine_10e.py', '../_base_/default_runtime.py']
max_epochs = 8
