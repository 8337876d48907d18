//! The HTTP server: actix-web's application served by actix-http's HTTP/1 service, over
//! connections whose request heads are checked first (see `headcheck`), on worker threads
//! of actix-server.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;
use std::time::Duration;

use actix_http::error::DispatchError;
use actix_http::{Extensions, HttpService, KeepAlive, ServiceConfig};
use actix_service::{IntoServiceFactory, ServiceFactoryExt, fn_service, map_config};
use actix_web::dev::{AppConfig, ServerHandle};
use actix_web::middleware::from_fn;
use actix_web::web;
use tracing::info;

use super::headcheck::{CheckedStream, HeadCheck};
use super::targets::TargetCache;
use super::{SelfAuthority, log, routes, sendfile};
use crate::service::Service;

/// What every actix `App` of a server is built from: one per worker thread, and one more per
/// worker for intercepted HTTPS connections (`intercept`), which must be served identically.
#[derive(Clone)]
pub(crate) struct AppParts {
    pub(super) app: web::Data<Service>,
    me: web::Data<SelfAuthority>,
    targets: web::Data<TargetCache>,
    served_by: web::Data<log::ServedBy>,
    /// `proxy.connect = "intercept"`: the CA and its leaves.
    pub(super) authority: Option<Arc<crate::intercept::Authority>>,
}

impl AppParts {
    pub(super) fn build(
        &self,
    ) -> actix_web::App<
        impl actix_web::dev::ServiceFactory<
            actix_web::dev::ServiceRequest,
            Config = (),
            Response = actix_web::dev::ServiceResponse<actix_web::body::BoxBody>,
            Error = actix_web::Error,
            InitError = (),
        > + use<>,
    > {
        actix_web::App::new()
            .app_data(self.app.clone())
            .app_data(self.me.clone())
            .app_data(self.targets.clone())
            .app_data(self.served_by.clone())
            .app_data(web::Data::new(self.clone()))
            .wrap(from_fn(log::log_requests))
            .configure(routes)
    }
}

/// Idle time allowed between requests on a kept-alive connection (actix-web's default).
const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// Time allowed for a clean close once the server has decided to close (actix-web's default).
const DISCONNECT_TIMEOUT: Duration = Duration::from_secs(1);

/// A running HTTP server.
pub struct Server {
    pub addr: SocketAddr,
    handle: ServerHandle,
    task: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl Server {
    /// Serve `app` on an already bound listener. Runs in the current tokio runtime; actix
    /// starts its own worker threads.
    pub fn start(app: Arc<Service>, listener: TcpListener) -> std::io::Result<Server> {
        let addr = listener.local_addr()?;
        // proxy.connect = "intercept": a CA that cannot be used is a reason not to start.
        let authority = crate::intercept::Authority::from_config(&app.config.proxy)
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        let parts = AppParts {
            app: web::Data::from(app.clone()),
            me: web::Data::new(SelfAuthority::new(addr, &app.config.public_url())),
            targets: web::Data::new(TargetCache::new()),
            served_by: web::Data::new(log::ServedBy(
                actix_web::http::header::HeaderValue::from_str(&app.cache.instance).unwrap_or_else(
                    |_| actix_web::http::header::HeaderValue::from_static("upcache"),
                ),
            )),
            authority,
        };
        let check = Arc::new(HeadCheck {
            served_by: app.cache.instance.clone(),
        });
        let workers = std::thread::available_parallelism().map_or(2, |n| n.get());
        let server = actix_server::Server::build()
            .workers(workers)
            .disable_signals()
            // A graceful stop lets responses in progress finish within the shutdown grace.
            .shutdown_timeout(crate::service::workers::SHUTDOWN_GRACE.as_secs())
            .listen("upcache", listener, move || {
                let app = parts
                    .build()
                    .into_factory()
                    .map_err(|e: actix_web::Error| e.error_response());
                let http = HttpService::build()
                    .keep_alive(KeepAlive::Timeout(KEEP_ALIVE))
                    // Heads are timed (and answered in JSON) by headcheck.
                    .client_request_timeout(Duration::ZERO)
                    .client_disconnect_timeout(DISCONNECT_TIMEOUT)
                    // Body pieces are polled only once everything before them reached the
                    // socket: the invariant that lets hits bypass actix with sendfile (see
                    // sendfile.rs).
                    .h1_write_buffer_size(1)
                    .local_addr(addr)
                    .on_connect_ext(|io: &CheckedStream, ext: &mut Extensions| {
                        if let Some(tcp) = io.tcp() {
                            sendfile::on_connect(tcp, io.hold(), ext);
                        }
                    })
                    .h1(map_config(app, |()| AppConfig::default()));
                // actix-http's parser, for headcheck to run on copies (one per worker).
                let parser = ServiceConfig::new(
                    KeepAlive::Timeout(KEEP_ALIVE),
                    Duration::ZERO,
                    Duration::ZERO,
                    false,
                    Some(addr),
                );
                let check = check.clone();
                fn_service(move |io: tokio::net::TcpStream| {
                    let _ = io.set_nodelay(true);
                    let peer = io.peer_addr().ok();
                    let io = CheckedStream::new(io, parser.clone(), check.clone());
                    std::future::ready(Ok::<_, DispatchError>((io, peer)))
                })
                .and_then(http)
            })?
            .run();
        let handle = server.handle();
        let task = tokio::spawn(server);
        info!(%addr, "listening");
        Ok(Server { addr, handle, task })
    }

    /// Stop accepting, finish in-flight requests (briefly), and return.
    pub async fn stop(self, graceful: bool) {
        self.handle.stop(graceful).await;
        let _ = self.task.await;
    }

    /// Wait until the server stops by itself (or is stopped through a handle).
    pub async fn wait(self) -> std::io::Result<()> {
        self.task.await.map_err(std::io::Error::other)?
    }

    pub fn handle(&self) -> ServerHandle {
        self.handle.clone()
    }
}
