model = dict(type='MLP')
lr = undefined_name * 2
