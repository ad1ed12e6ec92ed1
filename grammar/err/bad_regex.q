k | where payload.s =~ "a("
