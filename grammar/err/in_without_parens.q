k | where a in 1, 2
