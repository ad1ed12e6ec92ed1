k | where payload.filter = "a | b" and payload.x = "{c}"
