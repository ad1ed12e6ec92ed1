k | where x = "abc
