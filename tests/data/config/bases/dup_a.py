shared = 1
only_a = 1
