k | extend a 1
