//! A JSONL record line never panics the record parser (the strict JSON
//! reader, its number scan, the field rules), and a line it accepts is
//! written back as canonical JSON that reads back as the same record.
#![no_main]

use almanac::{MetadataRecord, StoredRecord};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = StoredRecord::from_log_line(text);
    if let Ok((record, _)) = MetadataRecord::from_json_line(text) {
        let written = StoredRecord { id: 1, record }.to_json_string();
        let back = StoredRecord::from_log_line(&written).expect("its own line reads back");
        let again = StoredRecord { id: 1, record: back.record }.to_json_string();
        assert_eq!(written, again, "written back differently");
    }
});
