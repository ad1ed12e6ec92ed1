k | where x = "a\qb"
