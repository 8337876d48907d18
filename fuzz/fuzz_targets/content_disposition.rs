//! The `Content-Disposition` file name sanitizer: whatever name a URL or an upload gives, the
//! header names a file without separators, control or bidi characters.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|name: &str| {
    upcache_fuzz::check_disposition(&upcache::url::content_disposition(name));
});
