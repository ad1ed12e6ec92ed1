k | since 5
