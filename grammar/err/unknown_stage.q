k | frobnicate x
