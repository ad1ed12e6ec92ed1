k | where (a in (1, 2)) = true and -a in (1 + 2, (3)) and not a in ("x")
