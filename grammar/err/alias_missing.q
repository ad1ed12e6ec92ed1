k | select x as
