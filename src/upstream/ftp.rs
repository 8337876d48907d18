//! FTP downloads (suppaftp, tokio): passive mode, anonymous or `user:password@` logins, size
//! from `SIZE`, date from `MDTM`, resume with `REST`.
//!
//! The SSRF guard applies as for HTTP: the control connection goes only to addresses the
//! guard allows (literal or resolved, checked on the address actually connected to), and the
//! data connection goes to the control connection's own address with the port from the `PASV`
//! reply (as curl does by default), so a server cannot point us at another host; the address
//! is checked again before connecting all the same.
//!
//! Only failures of the control connection's TCP connect (and of resolving the host) are
//! [`UpstreamError::Connect`], the kind that opens the host's circuit breaker. Once connected,
//! whatever goes wrong (a banner that is not FTP's, a reply to a bad path, a dropped control
//! or data connection) was said by a host that is up.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, SystemTime};

use bytes::{Bytes, BytesMut};
use suppaftp::tokio::{AsyncFtpStream, AsyncNoTlsStream, TransferStream};
use suppaftp::types::FileType;
use suppaftp::{FtpError, Mode};
use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

use super::{Head, Resume, UpstreamError, ssrf};
use crate::url::UpstreamUrl;

/// Size of one read from the data connection.
const READ_CHUNK: usize = 64 * 1024;

/// Login used when the URL names no user (RFC 1738), with the customary e-mail-like password.
const ANONYMOUS: (&str, &str) = ("anonymous", "anonymous@");

/// How FTP connections are made: timeouts and whether private addresses are allowed.
#[derive(Debug, Clone)]
pub struct FtpClient {
    pub connect_timeout: Duration,
    pub read_timeout: Duration,
    pub allow_private: bool,
}

/// A `RETR` in progress: the control connection stays open until the completion reply.
pub struct Transfer {
    /// Kept so the control connection lives as long as the transfer.
    _control: AsyncFtpStream,
    data: Option<TransferStream<AsyncNoTlsStream>>,
}

impl Transfer {
    /// The next piece of the file; `None` once the server confirmed the end of the transfer.
    pub async fn chunk(
        &mut self,
        url: &str,
        received: u64,
        read_timeout: Duration,
    ) -> Result<Option<Bytes>, UpstreamError> {
        let Some(data) = self.data.as_mut() else {
            return Ok(None);
        };
        let mut buf = BytesMut::with_capacity(READ_CHUNK);
        let timeout = || UpstreamError::Timeout {
            url: url.to_owned(),
            phase: "while sending the body",
        };
        let n = tokio::time::timeout(read_timeout, data.read_buf(&mut buf))
            .await
            .map_err(|_| timeout())?
            .map_err(|e| UpstreamError::Body {
                url: url.to_owned(),
                received,
                message: e.to_string(),
            })?;
        if n > 0 {
            return Ok(Some(buf.freeze()));
        }
        // End of the data connection: only the completion reply (226) says the file is whole;
        // a 426 or 451 here means the transfer broke.
        let data = self.data.take().expect("checked above");
        tokio::time::timeout(read_timeout, data.finish())
            .await
            .map_err(|_| timeout())?
            .map_err(|e| UpstreamError::Body {
                url: url.to_owned(),
                received,
                message: reply_text(&e),
            })?;
        Ok(None)
    }
}

impl FtpClient {
    /// Start downloading `url`, from `resume.offset` with `REST` when the file still has the
    /// size and date the resumed transfer had. The returned offset is where the data starts.
    pub async fn get(
        &self,
        url: &UpstreamUrl,
        resume: Option<&Resume>,
    ) -> Result<(Head, u64, Transfer), UpstreamError> {
        let shown = url.to_string();
        let (mut ftp, file) = self.open(url).await?;
        let head = self.describe(&mut ftp, url, &file).await?;
        let offset = match resume {
            Some(r)
                if r.offset > 0
                    && r.length.is_some()
                    && r.length == head.content_length
                    && r.if_range == head.last_modified =>
            {
                r.offset
            }
            _ => 0,
        };
        if offset > 0 {
            self.timed(&shown, ftp.resume_transfer(offset as usize))
                .await?;
        }
        let data = match self.timed(&shown, ftp.retr_as_stream(&file)).await {
            Ok(data) => data,
            // A server that refuses REST (502/504) still sends the whole file.
            Err(UpstreamError::Ftp { code, .. }) if offset > 0 && code != 550 => {
                let data = self.timed(&shown, ftp.retr_as_stream(&file)).await?;
                return Ok((head, 0, transfer(ftp, data)));
            }
            Err(e) => return Err(not_found_if_550(e, &shown)),
        };
        Ok((head, offset, transfer(ftp, data)))
    }

    /// What a HEAD request learns: size and date, or 404 for a missing file.
    pub async fn head(&self, url: &UpstreamUrl) -> Result<Head, UpstreamError> {
        let shown = url.to_string();
        let (mut ftp, file) = self.open(url).await?;
        let head = self.describe(&mut ftp, url, &file).await?;
        if head.content_length.is_none() {
            // SIZE is optional: without it, only a transfer tells whether the file exists.
            let data = self
                .timed(&shown, ftp.retr_as_stream(&file))
                .await
                .map_err(|e| not_found_if_550(e, &shown))?;
            drop(data);
        }
        let _ = tokio::time::timeout(self.read_timeout, ftp.quit()).await;
        Ok(head)
    }

    /// Connect, log in, switch to binary, change to the file's directory; returns the file name.
    async fn open(&self, url: &UpstreamUrl) -> Result<(AsyncFtpStream, String), UpstreamError> {
        let shown = url.to_string();
        let (dirs, file) = ftp_path(url);
        if file.is_empty() {
            return Err(UpstreamError::NotFound {
                url: shown,
                status: 550,
            });
        }
        let stream = self.connect_control(url).await?;
        let peer = stream.peer_addr().map_err(|e| UpstreamError::Exchange {
            url: shown.clone(),
            message: e.to_string(),
        })?;
        // A refusing banner (421 too many users) keeps its FTP code, which says whether to
        // retry; a banner that is not FTP at all is a protocol error.
        let mut ftp = self
            .timed(&shown, AsyncFtpStream::connect_with_stream(stream))
            .await?;
        // Data connections go to the control connection's address: EPSV carries only a port,
        // and PASV's address is replaced by the peer's (NAT workaround, curl's default).
        if peer.is_ipv6() {
            ftp.set_mode(Mode::ExtendedPassive);
        } else {
            ftp.set_mode(Mode::Passive);
            ftp.set_passive_nat_workaround(true);
        }
        let guard = self.clone();
        let mut ftp = ftp.passive_stream_builder(move |addr| {
            let guard = guard.clone();
            Box::pin(async move {
                guard
                    .connect_data(addr, peer.ip())
                    .await
                    .map_err(FtpError::ConnectionError)
            })
        });
        let (user, password) = credentials(url);
        self.timed(&shown, ftp.login(user.as_str(), password.as_str()))
            .await?;
        self.timed(&shown, ftp.transfer_type(FileType::Binary))
            .await?;
        for dir in &dirs {
            self.timed(&shown, ftp.cwd(dir))
                .await
                .map_err(|e| not_found_if_550(e, &shown))?;
        }
        Ok((ftp, file))
    }

    /// Size (`SIZE`) and date (`MDTM`); both optional in FTP, so failures mean "unknown".
    async fn describe(
        &self,
        ftp: &mut AsyncFtpStream,
        url: &UpstreamUrl,
        file: &str,
    ) -> Result<Head, UpstreamError> {
        let shown = url.to_string();
        let size = match self.timed(&shown, ftp.size(file)).await {
            Ok(n) => Some(n as u64),
            Err(UpstreamError::Ftp { code: 550, .. }) => {
                return Err(UpstreamError::NotFound {
                    url: shown,
                    status: 550,
                });
            }
            Err(UpstreamError::Ftp { .. }) => None,
            Err(e) => return Err(e),
        };
        let modified = match self.timed(&shown, ftp.mdtm(file)).await {
            Ok(t) => u64::try_from(t.and_utc().timestamp()).ok().map(|secs| {
                httpdate::fmt_http_date(SystemTime::UNIX_EPOCH + Duration::from_secs(secs))
            }),
            Err(UpstreamError::Ftp { .. }) => None,
            Err(e) => return Err(e),
        };
        Ok(Head {
            status: 200,
            content_length: size,
            content_type: None,
            etag: None,
            last_modified: modified,
            final_url: shown,
        })
    }

    /// The control connection, to an address the SSRF guard allows.
    async fn connect_control(&self, url: &UpstreamUrl) -> Result<TcpStream, UpstreamError> {
        let shown = url.to_string();
        let port = url.port();
        let resolved: Vec<SocketAddr> = match url.ip_literal() {
            Some(ip) => vec![SocketAddr::new(ip, port)],
            None => tokio::time::timeout(
                self.connect_timeout,
                tokio::net::lookup_host((url.host(), port)),
            )
            .await
            .map_err(|_| UpstreamError::Timeout {
                url: shown.clone(),
                phase: "while resolving the host",
            })?
            .map_err(|e| connect_error(&shown, format!("cannot resolve {}: {e}", url.host())))?
            .collect(),
        };
        let allowed: Vec<SocketAddr> = resolved
            .iter()
            .copied()
            .filter(|a| self.allow_private || !ssrf::is_forbidden(a.ip()))
            .collect();
        if allowed.is_empty() {
            return Err(match resolved.first() {
                Some(first) => UpstreamError::ForbiddenDestination {
                    host: url.host().to_owned(),
                    reason: format!("{} is a private or internal address", first.ip()),
                },
                None => connect_error(&shown, format!("{} has no addresses", url.host())),
            });
        }
        let mut last = String::new();
        for addr in allowed {
            match tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr)).await {
                Ok(Ok(stream)) => {
                    let _ = stream.set_nodelay(true);
                    return Ok(stream);
                }
                Ok(Err(e)) => last = format!("{addr}: {e}"),
                Err(_) => last = format!("{addr}: timed out"),
            }
        }
        if last.ends_with("timed out") {
            return Err(UpstreamError::Timeout {
                url: shown,
                phase: "while connecting",
            });
        }
        Err(connect_error(&shown, last))
    }

    /// A passive-mode data connection: only to the control connection's host, and never to a
    /// forbidden address.
    async fn connect_data(&self, addr: SocketAddr, control: IpAddr) -> std::io::Result<TcpStream> {
        if addr.ip() != control {
            return Err(std::io::Error::other(format!(
                "data address {addr} is not the server's address {control}"
            )));
        }
        if !self.allow_private && ssrf::is_forbidden(addr.ip()) {
            return Err(std::io::Error::other(format!(
                "data address {addr} is a private or internal address"
            )));
        }
        let stream = tokio::time::timeout(self.connect_timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "data connection"))??;
        let _ = stream.set_nodelay(true);
        Ok(stream)
    }

    /// One control-connection exchange, bounded by `read_timeout`, errors mapped to ours.
    async fn timed<T>(
        &self,
        url: &str,
        fut: impl Future<Output = Result<T, FtpError>>,
    ) -> Result<T, UpstreamError> {
        match tokio::time::timeout(self.read_timeout, fut).await {
            Err(_) => Err(UpstreamError::Timeout {
                url: url.to_owned(),
                phase: "before answering a command",
            }),
            Ok(Ok(v)) => Ok(v),
            Ok(Err(e)) => Err(ftp_error(url, e)),
        }
    }
}

fn transfer(control: AsyncFtpStream, data: TransferStream<AsyncNoTlsStream>) -> Transfer {
    Transfer {
        _control: control,
        data: Some(data),
    }
}

fn connect_error(url: &str, message: String) -> UpstreamError {
    UpstreamError::Connect {
        url: url.to_owned(),
        message,
    }
}

/// 550 ("file unavailable") is FTP's 404.
fn not_found_if_550(e: UpstreamError, url: &str) -> UpstreamError {
    match e {
        UpstreamError::Ftp { code: 550, .. } => UpstreamError::NotFound {
            url: url.to_owned(),
            status: 550,
        },
        other => other,
    }
}

fn ftp_error(url: &str, e: FtpError) -> UpstreamError {
    match e {
        // suppaftp refuses to send an argument with CR or LF (see `url`: such URLs are
        // rejected before this); a refusal of ours, not the server's.
        FtpError::ConnectionError(io) if io.kind() == std::io::ErrorKind::InvalidInput => {
            UpstreamError::Protocol {
                url: url.to_owned(),
                message: io.to_string(),
            }
        }
        // The control or data connection broke after the host was reached.
        FtpError::ConnectionError(io) => UpstreamError::Exchange {
            url: url.to_owned(),
            message: io.to_string(),
        },
        FtpError::UnexpectedResponse(_) => {
            let message = reply_text(&e);
            let code = message
                .get(..3)
                .and_then(|c| c.parse().ok())
                .unwrap_or_default();
            UpstreamError::Ftp {
                url: url.to_owned(),
                code,
                message,
            }
        }
        other => UpstreamError::Protocol {
            url: url.to_owned(),
            message: other.to_string(),
        },
    }
}

/// The server's reply line for an unexpected response, else the error's description.
fn reply_text(e: &FtpError) -> String {
    match e {
        FtpError::UnexpectedResponse(r) => {
            let text = String::from_utf8_lossy(&r.body);
            let line = text.lines().last().unwrap_or_default().trim();
            if line.is_empty() {
                format!("{:03} {}", r.status.code(), r.status.desc())
            } else {
                line.to_owned()
            }
        }
        other => other.to_string(),
    }
}

/// User and password from the URL, percent-decoded; anonymous without a user.
fn credentials(url: &UpstreamUrl) -> (String, String) {
    let u = url.as_url();
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    if u.username().is_empty() {
        return (ANONYMOUS.0.to_owned(), ANONYMOUS.1.to_owned());
    }
    (dec(u.username()), dec(u.password().unwrap_or_default()))
}

/// RFC 1738: the path's directories (each changed into in turn, relative to the login
/// directory; an empty first one means the root) and the file name, percent-decoded, without
/// a `;type=` suffix.
fn ftp_path(url: &UpstreamUrl) -> (Vec<String>, String) {
    let path = url.as_url().path();
    let path = path.split_once(";type=").map_or(path, |(p, _)| p);
    let dec = |s: &str| {
        percent_encoding::percent_decode_str(s)
            .decode_utf8_lossy()
            .into_owned()
    };
    let path = path.strip_prefix('/').unwrap_or(path);
    let mut segs: Vec<String> = path.split('/').map(dec).collect();
    let file = segs.pop().unwrap_or_default();
    let dirs = segs
        .into_iter()
        .enumerate()
        .filter_map(|(i, s)| match (i, s.is_empty()) {
            (0, true) => Some("/".to_owned()),
            (_, true) => None,
            (_, false) => Some(s),
        })
        .collect();
    (dirs, file)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(u: &str) -> (Vec<String>, String) {
        ftp_path(&UpstreamUrl::parse(u).unwrap())
    }

    #[test]
    fn paths_follow_rfc_1738() {
        assert_eq!(
            parts("ftp://h/gnu/hello/hello-2.12.tar.gz"),
            (
                vec!["gnu".into(), "hello".into()],
                "hello-2.12.tar.gz".into()
            )
        );
        assert_eq!(parts("ftp://h/a.tgz"), (vec![], "a.tgz".into()));
        assert_eq!(
            parts("ftp://h//etc/x;type=i"),
            (vec!["/".into(), "etc".into()], "x".into())
        );
        assert_eq!(
            parts("ftp://h/a%20b/c%3Bd"),
            (vec!["a b".into()], "c;d".into())
        );
        assert_eq!(parts("ftp://h/dir/"), (vec!["dir".into()], String::new()));
    }

    #[test]
    fn credentials_default_to_anonymous() {
        let c = |u: &str| credentials(&UpstreamUrl::parse(u).unwrap());
        assert_eq!(c("ftp://h/x"), ("anonymous".into(), "anonymous@".into()));
        assert_eq!(c("ftp://alice:p%40ss@h/x"), ("alice".into(), "p@ss".into()));
    }
}
