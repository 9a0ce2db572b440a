custom_imports = dict(imports=['cr_test_custom_module'], allow_failed_imports=False)
value = 1
