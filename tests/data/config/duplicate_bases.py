_base_ = ['./bases/dup_a.py', './bases/dup_b.py']
