k | where x = "\u{110000}"
