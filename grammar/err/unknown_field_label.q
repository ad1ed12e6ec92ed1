k | where table = "x"
