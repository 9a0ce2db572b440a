# Inherits from three bases in three formats; overrides and references base values.
_base_ = ['./bases/base_model.py', './bases/base_runtime.yaml', './bases/base_data.json']
optimizer = dict(lr=0.01)
model = dict(act=dict(_delete_=True, type='GELU'))
max_epochs = 8
batch = {{ _base_.data.batch_size }}
first_hook = {{ _base_.hooks.0.type }}
hidden = {{ _base_.model.hidden }}
extra = 'only in child'
