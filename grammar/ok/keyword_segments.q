k | where payload.and = 1 and payload.not.in = 2 and payload.null = 3
