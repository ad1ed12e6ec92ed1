k | where payload."row count" > 0 and payload.columns[0].name = "id" and target.extras.partition = "p1" and context.extras.tenant = "acme" and payload."a.b"[2][3] = 1 and payload."rows" = 1
