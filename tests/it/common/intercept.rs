//! An intercepting upcache (`proxy.connect = "intercept"`) in front of an HTTPS test origin,
//! for tests that drive real clients through `https_proxy`.

use std::path::PathBuf;
use std::process::Command;

use super::server::TestServer;
use super::tls::{TestCa, TlsFront};
use super::upstream::Upstream;
use upcache::config::ConnectMode;

/// An intercepting server in front of an HTTPS origin.
pub struct Setup {
    pub srv: TestServer,
    pub up: Upstream,
    pub front: TlsFront,
    /// upcache's interception CA certificate (what clients install).
    pub ca_pem: PathBuf,
    /// The origin's CA (what upcache trusts through `upstream.ca_file`).
    pub origin_ca: TestCa,
    _ca_dir: tempfile::TempDir,
}

impl Setup {
    pub async fn start(f: impl FnOnce(&mut upcache::Config)) -> Setup {
        let up = Upstream::start().await;
        let origin_ca = TestCa::new("test origin CA");
        let front = TlsFront::start(up.addr(), origin_ca.leaf(&["localhost", "127.0.0.1"])).await;
        let ca_dir = tempfile::tempdir().unwrap();
        let (ca_pem, ca_key) = upcache::intercept::ca::create(ca_dir.path()).unwrap();
        let srv = TestServer::start_with(|c| {
            c.proxy.connect = ConnectMode::Intercept;
            c.proxy.ca_cert = ca_pem.clone();
            c.proxy.ca_key = ca_key;
            c.proxy.connect_ports = vec![front.port()];
            c.upstream.ca_file = origin_ca.cert_path.clone();
            f(c);
        })
        .await;
        Setup {
            srv,
            up,
            front,
            ca_pem,
            origin_ca,
            _ca_dir: ca_dir,
        }
    }

    /// `https://127.0.0.1:<front>/<path>`
    pub fn url(&self, path: &str) -> String {
        format!("https://127.0.0.1:{}{path}", self.front.port())
    }
}

/// Remove every proxy setting of this environment from `cmd`'s.
pub fn clear_proxy_env(cmd: &mut Command) {
    for var in [
        "http_proxy",
        "HTTP_PROXY",
        "https_proxy",
        "HTTPS_PROXY",
        "all_proxy",
        "ALL_PROXY",
        "no_proxy",
        "NO_PROXY",
    ] {
        cmd.env_remove(var);
    }
}

/// Run a process with `https_proxy` set to `proxy` (and no other proxy settings).
pub fn via_proxy(cmd: &mut Command, proxy: &str) {
    clear_proxy_env(cmd);
    cmd.env("https_proxy", proxy);
}
