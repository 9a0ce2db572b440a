_base_ = './bases/base_model.py'
lr = {{ _base_.optimizer.lrr }}
