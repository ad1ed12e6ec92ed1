k
| where
   payload.rows > 0 and rowz > 1
