import os.path as osp


def helper(x):
    return x * 2


lr = helper(0.05)
name = osp.join('a', 'b')
_private = 1
__dunder = 2
unicode_text = 'Grüße, 世界'
nested = dict(a=[1, 2, dict(b=(3, 4))], c={'not-an-identifier': 5, 7: 'int key'})
