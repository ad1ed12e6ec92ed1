k, | where x
