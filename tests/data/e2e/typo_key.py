_base_ = './tiny.py'
optimzer = dict(type='SGD', lr=0.5)
