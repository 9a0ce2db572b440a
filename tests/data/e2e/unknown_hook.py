_base_ = './tiny.py'
hooks = [dict(type='LossHook'), dict(type='AccuracyHok')]
