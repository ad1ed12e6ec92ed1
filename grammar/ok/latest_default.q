k | latest | latest by kind, target, payload.x
