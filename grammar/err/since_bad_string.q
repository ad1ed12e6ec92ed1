k | since "yesterday"
