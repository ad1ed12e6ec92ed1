k | where a = - 3 and b = -(3) and c = --x and d = -x * -2 and e = - - 1
