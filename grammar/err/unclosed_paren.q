k | where (a = 1
