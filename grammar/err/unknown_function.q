k | where lenght(payload.s) > 2
