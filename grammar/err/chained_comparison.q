k | where a < b < c
