k | where x = 1 )
