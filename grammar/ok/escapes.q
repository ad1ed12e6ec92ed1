k | where payload.s = "a\\\\b\"c\nd\te\u{1F600}\u{7f}"
