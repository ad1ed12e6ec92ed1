k | where a = 42 or a = -3.5 or a = 1e6 or a = 1E-3 or a = 2.5e+2 or a = 007 or a = 0.1 or a = -0
