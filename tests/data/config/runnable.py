_base_ = './bases/base_model.py'
work_dir = './work_dirs/runnable'
hooks = [dict(type='LossHook'), dict(type='SaveCheckpointHook', interval=1)]
message = "it's a \"quoted\"\nmulti-line string"
odd_keys = {'with-dash': 1, 'class': 2, 3: 'three'}
