_base_ = './bases/base_model.py'
optimizer = dict(lr=dict(value=0.1))
