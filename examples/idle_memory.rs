//! Machine check, no Almanac code: how long touching memory takes again
//! after the process left it idle for a while.
//!
//! Allocates 512 MiB, writes one byte per 4 KiB page, then for each pause
//! sleeps and writes every page again, timing the pass. On a machine whose
//! host takes back memory a guest leaves idle, the pass after a pause of a
//! second or two is many times slower than right after the first; on an
//! ordinary machine every pass costs about the same. benches/README.md
//! ("The machine") explains why this matters to the compare bench.
//! `cargo run --release --example idle_memory`
use std::time::{Duration, Instant};

const BYTES: usize = 512 << 20;
const PAGE: usize = 4096;

fn touch(memory: &mut [u8]) -> Duration {
    let start = Instant::now();
    for page in memory.chunks_mut(PAGE) {
        // Volatile: the writes must happen, one per page, in order.
        // SAFETY: `page[0]` is a live, aligned byte this loop borrows
        // exclusively.
        unsafe { std::ptr::write_volatile(&mut page[0], page[0].wrapping_add(1)) };
    }
    start.elapsed()
}

fn main() {
    let mut memory = vec![0u8; BYTES];
    let first = touch(&mut memory);
    println!("first pass over {} MiB: {first:.1?}", BYTES >> 20);
    for pause_ms in [0u64, 20, 100, 500, 2000, 5000] {
        std::thread::sleep(Duration::from_millis(pause_ms));
        let again = touch(&mut memory);
        println!(
            "after {pause_ms:>4} ms idle: {again:>8.1?} ({:.2} µs per 4 KiB page)",
            again.as_secs_f64() * 1e6 / (BYTES / PAGE) as f64
        );
    }
}
