k | where x = $Min
