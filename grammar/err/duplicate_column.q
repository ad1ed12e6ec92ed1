k | select target, target
