//! The parser and the planner never panic, loop or overflow the stack, on any input.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Err(e) = almanac::query::prepare(text) {
            // Rendering positions an error in the text: it must not panic either.
            let _ = e.render(text);
        }
    }
});
