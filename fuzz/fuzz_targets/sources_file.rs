//! dist-git `sources` files: no panic, and every line read names a checksum and a file.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|text: &str| {
    let _ = upcache::spec::parse_sources(text);
});
