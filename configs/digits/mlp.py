# MLP on the scikit-learn digits: trains in seconds on a laptop CPU.
_base_ = ['../_base_/models/mlp.py', '../_base_/datasets/digits.py',
          '../_base_/schedules/adamw_cosine_10e.py', '../_base_/default_runtime.py']
