//! Checksum paths and the lookaside layout: what parses names a well-formed checksum, and
//! the file name it carries makes a safe `Content-Disposition`.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::http::checksum;

fuzz_target!(|path: &str| {
    let Some(Ok(asked)) = checksum::parse(path) else {
        return;
    };
    assert_eq!(asked.hex.len(), asked.algo.hex_len(), "{path:?}");
    assert!(
        asked
            .hex
            .bytes()
            .all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')),
        "{path:?}"
    );
    if let Some(name) = &asked.name {
        upcache_fuzz::check_disposition(&upcache::url::content_disposition(name));
    }
});
