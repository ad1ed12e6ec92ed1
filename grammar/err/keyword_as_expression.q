k | where and
