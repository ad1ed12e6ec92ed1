k | where payload. = 1
