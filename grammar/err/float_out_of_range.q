k | where x = 1e999
