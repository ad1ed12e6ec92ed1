k | extend by = 1, rows = 2, asc = 3 | select by as desc, rows
