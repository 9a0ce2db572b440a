_base_ = './c.yaml'
b = 1
