k | where d in (1ms, 2s, 3m, 4h, 5d, 6w, 90d, 0s)
