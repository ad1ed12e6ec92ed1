k | where exists(1)
