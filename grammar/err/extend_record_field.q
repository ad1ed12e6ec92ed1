k | extend kind = 1
