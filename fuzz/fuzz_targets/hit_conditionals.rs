//! `Range`, `If-Range` and `If-None-Match` against a blob size: a partial answer is never
//! empty and never beyond the blob, and each outcome has the header that justifies it.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::http::{Conditionals, HitOutcome, hit_outcome};

const BLAKE3: &str = "af1349b9f5f9a1a6a0404dea36dcc9499bcb25c9adc112b7cc9a93cae41f3262";
const LAST_MODIFIED: &str = "Tue, 01 Dec 2026 10:00:00 GMT";

fuzz_target!(|data: &[u8]| {
    if data.len() < 8 {
        return;
    }
    let (size, rest) = data.split_at(8);
    let size = u64::from_le_bytes(size.try_into().expect("8 bytes"));
    // Small sizes are where off-by-one errors live.
    let size = if size & 1 == 0 {
        size >> 1
    } else {
        (size >> 1) % 4096
    };
    let text = String::from_utf8_lossy(rest);
    let mut parts = text.split('\n');
    let mut header = || parts.next().filter(|s| !s.is_empty());
    let headers = Conditionals {
        range: header(),
        if_range: header(),
        if_none_match: header(),
    };
    match hit_outcome(&headers, BLAKE3, LAST_MODIFIED, size) {
        HitOutcome::Partial(start, end) => {
            assert!(headers.range.is_some(), "a partial answer without Range");
            assert!(
                start < end && end <= size,
                "[{start}, {end}) for size {size}"
            );
        }
        HitOutcome::Unsatisfiable(r) => assert_eq!(Some(r), headers.range),
        HitOutcome::NotModified => assert!(headers.if_none_match.is_some()),
        HitOutcome::Full => {}
    }
});
