k | where (a or b) and (c = d) and (e + f) * g > -(h - i) and -x = 1 and not (a and b)
