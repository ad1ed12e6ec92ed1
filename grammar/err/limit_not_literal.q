k | limit payload.n
