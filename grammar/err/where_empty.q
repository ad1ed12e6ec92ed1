k | where
