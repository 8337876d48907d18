//! HTTP answers read off raw connections, for the tests that write requests byte by byte.

use serde_json::Value;

/// One response read off a raw connection.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    /// Names lowercased, values trimmed, in the order received.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON; panics, naming the body, if it is not JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: body {:?}", String::from_utf8_lossy(&self.body)))
    }

    /// The JSON error body (SPEC 4.5); panics, naming the answer, if it is not one.
    pub fn error(&self) -> Value {
        let v: Value = serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "{} answer has no JSON body ({e}): {:?}",
                self.status,
                String::from_utf8_lossy(&self.body)
            )
        });
        assert!(v["error"].is_string() && v["message"].is_string(), "{v}");
        v
    }
}
