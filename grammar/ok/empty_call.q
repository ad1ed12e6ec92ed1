k | stats COUNT ( ) as n
