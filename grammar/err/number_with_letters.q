k | where x = 12abc
