//! Whatever parses prints to canonical text that parses back to the same
//! query, and printing that again gives the same text.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(query) = almanac::query::parse(text) else {
        return;
    };
    let printed = query.to_string();
    let again = almanac::query::parse(&printed)
        .unwrap_or_else(|e| panic!("canonical text does not parse: {printed:?}: {e}"));
    assert_eq!(again, query, "round trip changed {text:?} (printed {printed:?})");
    assert_eq!(again.to_string(), printed, "printing is not stable");
});
