k | where payload.s =~ payload.p
