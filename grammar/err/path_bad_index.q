k | where payload[x] = 1
