_base_ = './tiny.py'
custom_imports = dict(imports=['my_hooks'])
hooks = [dict(type='LossHook'), dict(type='MarkerHook', name='marker.json')]
