//! Request target -> one of the three forms -> normalized upstream URL. Normalizing is
//! idempotent, the mirror form of the result names the same URL, and the result never names
//! another host than the one the target shows.
#![no_main]

use libfuzzer_sys::fuzz_target;
use upcache::url::{RequestForm, UpstreamUrl, from_mirror_path, parse_request_target, query_pairs};

fuzz_target!(|target: &str| {
    let Some((form, Ok(url))) = parse_request_target(target) else {
        return;
    };
    let again = UpstreamUrl::parse(url.as_str())
        .unwrap_or_else(|e| panic!("{} does not parse again: {e}", url.as_str()));
    assert_eq!(again, url, "normalizing is not idempotent");
    let u = url.as_url();
    if u.username().is_empty() && u.password().is_none() {
        assert_eq!(
            from_mirror_path(&url.mirror_path()).as_ref(),
            Ok(&url),
            "mirror path {}",
            url.mirror_path()
        );
    }
    // The host as a plain reading of the target shows it, normalized the same way.
    let absolute = match form {
        RequestForm::Proxy => target.to_owned(),
        RequestForm::Fetch => {
            let query = target.split_once('?').map_or("", |(_, q)| q);
            match query_pairs(query).into_iter().find(|(k, _)| k == "url") {
                Some((_, v)) => v,
                None => return,
            }
        }
        RequestForm::Mirror => {
            let mut parts = target.trim_start_matches('/').splitn(3, '/');
            let scheme = parts.next().unwrap_or_default();
            let authority = parts.next().unwrap_or_default();
            format!("{scheme}://{authority}/")
        }
    };
    if let Some(host) = shown_host(&absolute) {
        if let Ok(shown) = url::Url::parse(&format!("http://{host}/")) {
            assert_eq!(
                shown.host_str(),
                u.host_str(),
                "{target:?} shows host {host:?} but names {}",
                url.as_str()
            );
        }
    }
});

/// The host part of `scheme://[userinfo@]host[:port]/...`, read the simple way.
fn shown_host(s: &str) -> Option<String> {
    let rest = s.trim().split_once("://")?.1;
    let authority = rest.split(['/', '?', '#']).next()?;
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    let host = if host_port.starts_with('[') {
        &host_port[..=host_port.find(']')?]
    } else {
        host_port.rsplit_once(':').map_or(host_port, |(h, _)| h)
    };
    Some(host.to_owned())
}
