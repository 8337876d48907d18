//! `spec list` on arbitrary bytes: no panic, and bounded time and memory whatever the macros
//! do (recursion, exponential definitions, huge repetitions); libFuzzer's -timeout and
//! -rss_limit_mb flags (see scripts/fuzz.sh) turn a runaway expansion into a failure.
#![no_main]

use libfuzzer_sys::fuzz_target;

/// A spec of a few KiB never expands to more than this per entry.
const MAX_VALUE: usize = 1 << 20;

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    if let Ok(spec) = upcache::spec::parse(&text, &[]) {
        for e in &spec.entries {
            assert!(
                e.value.len() <= MAX_VALUE,
                "{} bytes in {}",
                e.value.len(),
                e.label()
            );
            assert!(!e.value.is_empty(), "{} is empty", e.label());
        }
    }
});
