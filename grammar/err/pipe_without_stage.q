k |
