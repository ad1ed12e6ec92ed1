k | extend null = 1
