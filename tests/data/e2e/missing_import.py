_base_ = './tiny.py'
custom_imports = dict(imports=['no_such_module_for_tests'])
