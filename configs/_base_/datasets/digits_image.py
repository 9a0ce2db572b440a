# The 8x8 handwritten digits as 1x8x8 images, for convolutional models.
_base_ = './digits.py'
data = dict(
    train=dict(dataset=dict(flatten=False)),
    test=dict(dataset=dict(flatten=False)),
)
