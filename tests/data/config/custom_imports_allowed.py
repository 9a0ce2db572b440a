custom_imports = dict(imports=['cr_test_no_such_module'], allow_failed_imports=True)
