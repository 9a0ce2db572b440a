_base_ = './tiny.py'
model = dict(type='MPL', _delete_=True)
