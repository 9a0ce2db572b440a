_base_ = './bases/does_not_exist.py'
