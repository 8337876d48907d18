//! Request heads: what the head check's fast path takes as a plain request without a body,
//! actix-http's parser (which every other head goes through) takes the same way, with the
//! same length. The fast path may refuse to judge anything; it may never accept what the
//! parser would refuse or frame differently (SPEC 10: what actix accepts, exactly).
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|head: &[u8]| {
    upcache::http::assert_plain_heads_agree(head);
});
