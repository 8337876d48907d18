//! The command line: `serve` runs the service; the client commands talk to a server over HTTP;
//! `spec list` reads a spec without any network.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use tracing::{error, info};

use crate::client;
use crate::config::{Config, LogFormat};
use crate::http::Server;
use crate::offline::Offline;
use crate::service::Service;
use crate::spec::Define;
use crate::spec_check;

const DEFAULT_SERVER: &str = "http://127.0.0.1:8080";

/// upcache: a caching proxy and content-addressed store for upstream source archives.
#[derive(Debug, Parser)]
#[command(name = "upcache", version, about)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the server.
    Serve {
        #[command(flatten)]
        config: ConfigArg,
        /// Listen address, overrides `server.listen`.
        #[arg(long)]
        listen: Option<String>,
        /// Data directory, overrides `storage.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Download a URL through a server (with a progress bar on a terminal).
    Fetch {
        /// The upstream URL.
        url: String,
        /// Output file; `-` for standard output. Default: the URL's file name.
        #[arg(short = 'o', long)]
        output: Option<PathBuf>,
        /// Give up when the server sends nothing for this long (e.g. "90s", "5m").
        #[arg(long, default_value = "5m", value_parser = crate::config::parse_duration)]
        read_timeout: Duration,
        #[command(flatten)]
        server: ServerArg,
    },
    /// Make sure URLs are cached (fetched through the server in the background), with
    /// progress; exit 1 listing the URLs that failed.
    Prefetch {
        /// URLs to prefetch.
        #[arg(required_unless_present = "file", conflicts_with = "file")]
        urls: Vec<String>,
        /// File with one URL per line (`-`: standard input); blank lines and `#` comments
        /// are skipped.
        #[arg(short = 'f', long = "file", value_name = "LIST")]
        file: Option<PathBuf>,
        /// Download cached URLs again and compare them with the stored bytes (admin token):
        /// drift is reported, and exits 1, but the stored bytes keep being served.
        #[arg(long)]
        revalidate: bool,
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Upload a file (a tarball whose upstream URL is dead), optionally bound to a URL.
    Upload {
        /// The file to upload; it is streamed, never read into memory whole.
        file: PathBuf,
        /// Upstream URL to bind to the file.
        #[arg(long)]
        url: Option<String>,
        /// Expected md5; the server refuses content that does not match.
        #[arg(long)]
        md5: Option<String>,
        /// Expected sha256; the server refuses content that does not match.
        #[arg(long)]
        sha256: Option<String>,
        /// File name used in the returned links. Default: the file's own name.
        #[arg(long, value_name = "NAME")]
        filename: Option<String>,
        /// Rebind --url even if it is bound to other content (needs an admin token).
        #[arg(long, requires = "url")]
        replace: bool,
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        token: TokenArg,
    },
    /// Token commands.
    Token {
        #[command(subcommand)]
        command: TokenCommand,
    },
    /// Audit log commands.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Offline: one sweeper pass over the data directory (the server must be stopped; a
    /// running one does it on POST /api/v1/sweep).
    Gc {
        #[command(flatten)]
        config: ConfigArg,
        /// Data directory, overrides `storage.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Offline: re-hash every blob; corrupt ones are quarantined (exit 1 if any). Exits 1,
    /// creating nothing, where there is no upcache data or a running server holds it.
    Verify {
        #[command(flatten)]
        config: ConfigArg,
        /// Data directory, overrides `storage.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Configuration commands.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Interception CA commands (`proxy.connect = "intercept"`).
    Ca {
        #[command(subcommand)]
        command: CaCommand,
    },
    /// RPM spec commands: list and check the Source/Patch entries of a spec.
    Spec {
        #[command(subcommand)]
        command: SpecCommand,
    },
}

#[derive(Debug, clap::Args)]
pub struct TokenArg {
    /// Bearer token (`$UPCACHE_TOKEN`); sent only in the Authorization header.
    #[arg(long, env = "UPCACHE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum TokenCommand {
    /// Print a new random token and the config lines holding its sha256.
    New {
        /// Name recorded as the audit actor.
        name: String,
        /// Comma-separated scopes: upload, admin (admin implies upload).
        #[arg(long, default_value = "upload", value_delimiter = ',')]
        scope: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Stream audit events, oldest first, to standard output.
    Export {
        /// Only events at or after this RFC 3339 time.
        #[arg(long)]
        since: Option<String>,
        /// Only events at or before this RFC 3339 time.
        #[arg(long)]
        until: Option<String>,
        /// Output format: one JSON object per line, or CSV with a header row.
        #[arg(long, default_value = "jsonl", value_parser = ["jsonl", "csv"])]
        format: String,
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        token: TokenArg,
    },
}

#[derive(Debug, clap::Args)]
pub struct ConfigArg {
    /// TOML configuration file (`$UPCACHE_CONFIG`); without one, the built-in defaults.
    /// `UPCACHE__<SECTION>__<KEY>` variables override either.
    #[arg(long, env = "UPCACHE_CONFIG", value_name = "FILE")]
    pub config: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
pub struct ServerArg {
    /// upcache server base URL.
    #[arg(long, env = "UPCACHE_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
}

#[derive(Debug, Subcommand)]
pub enum SpecCommand {
    /// Print the spec's Source/Patch entries with macros expanded (no network).
    List {
        /// The RPM spec file.
        specfile: PathBuf,
        /// Print JSON: [{"tag","number","value","url","file"}].
        #[arg(long)]
        json: bool,
        /// Let rpm expand the spec (`rpmspec -P`, when installed). rpm runs the spec's
        /// %(...) shell commands and Lua code: use it only on specs you trust.
        #[arg(long)]
        rpmspec: bool,
        #[command(flatten)]
        defines: DefineArg,
    },
    /// Make sure the server has every source of the spec (fetching them through it), and
    /// compare them with local files and a dist-git sources file.
    Check {
        /// The RPM spec file.
        specfile: PathBuf,
        /// Directory with the package's files: those named like an entry are compared by md5.
        #[arg(long)]
        dir: Option<PathBuf>,
        /// dist-git `sources` file: each checksum must be on the server.
        #[arg(long)]
        sources: Option<PathBuf>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        server: ServerArg,
        #[command(flatten)]
        defines: DefineArg,
    },
}

#[derive(Debug, clap::Args)]
pub struct DefineArg {
    /// Define a macro, like rpm's --define (repeatable), e.g. --define 'dist .oe2403'.
    #[arg(short = 'D', long = "define", value_name = "NAME VALUE", value_parser = parse_define)]
    pub define: Vec<Define>,
}

fn parse_define(s: &str) -> Result<Define, String> {
    s.parse().map_err(|e: crate::spec::SpecError| e.to_string())
}

#[derive(Debug, Subcommand)]
pub enum CaCommand {
    /// Make a new CA: DIR/ca.pem (install it on the clients) and DIR/ca-key.pem (mode 0600);
    /// never overwrites.
    New {
        /// Directory to write the two files into (created if missing).
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Validate the configuration and print the effective result.
    Check {
        #[command(flatten)]
        config: ConfigArg,
    },
}

/// Run a parsed command; returns the process exit code (0 ok, 1 operational failure).
pub fn run(cli: Cli) -> ExitCode {
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => {
            let mut cfg = match load_config(config.config.as_deref()) {
                Ok(c) => c,
                Err(code) => return code,
            };
            if let Some(l) = listen {
                cfg.server.listen = l;
            }
            if let Some(d) = data_dir {
                cfg.storage.data_dir = d;
            }
            if let Err(e) = cfg.validate() {
                eprintln!("upcache: invalid configuration: {e}");
                return ExitCode::from(1);
            }
            let _log_flusher = init_tracing(&cfg);
            let _access_flusher = crate::accesslog::start(cfg.log.format);
            runtime().block_on(serve(cfg))
        }
        Command::Fetch {
            url,
            output,
            read_timeout,
            server,
        } => client::exit(runtime().block_on(client::fetch(
            &server.server,
            &url,
            output.as_deref(),
            read_timeout,
        ))),
        Command::Gc { config, data_dir } => offline(&config, data_dir, Offline::Gc, |app| {
            let report = app.sweep().map_err(|e| e.to_string())?;
            println!(
                "{}",
                serde_json::to_string_pretty(&report).expect("serializable")
            );
            Ok(ExitCode::SUCCESS)
        }),
        Command::Verify { config, data_dir } => {
            offline(&config, data_dir, Offline::Verify, |app| {
                let (checked, corrupt) =
                    crate::sweeper::verify_all(&app.cache).map_err(|e| e.to_string())?;
                println!(
                    "{}",
                    serde_json::json!({"checked": checked, "corrupt": corrupt})
                );
                Ok(if corrupt > 0 {
                    ExitCode::from(1)
                } else {
                    ExitCode::SUCCESS
                })
            })
        }
        Command::Prefetch {
            urls,
            file,
            revalidate,
            server,
            token,
        } => {
            let urls = match file {
                Some(f) => match client::read_url_list(&f) {
                    Ok(urls) => urls,
                    Err(e) => {
                        eprintln!("upcache: {e}");
                        return ExitCode::from(1);
                    }
                },
                None => urls,
            };
            client::exit(runtime().block_on(client::prefetch(
                &server.server,
                token.token.as_deref(),
                urls,
                revalidate,
            )))
        }
        Command::Upload {
            file,
            url,
            md5,
            sha256,
            filename,
            replace,
            server,
            token,
        } => client::exit(runtime().block_on(client::upload(
            &server.server,
            token.token.as_deref(),
            &file,
            &client::Upload {
                url,
                md5,
                sha256,
                filename,
                replace,
            },
        ))),
        Command::Token {
            command: TokenCommand::New { name, scope },
        } => token_new(&name, &scope),
        Command::Audit {
            command:
                AuditCommand::Export {
                    since,
                    until,
                    format,
                    server,
                    token,
                },
        } => client::exit(runtime().block_on(client::audit_export(
            &server.server,
            token.token.as_deref(),
            since.as_deref(),
            until.as_deref(),
            &format,
        ))),
        Command::Ca {
            command: CaCommand::New { out },
        } => ca_new(&out),
        Command::Config {
            command: ConfigCommand::Check { config },
        } => match load_config(config.config.as_deref()) {
            Ok(cfg) => {
                print!("{}", cfg.to_toml_string());
                eprintln!("configuration is valid");
                ExitCode::SUCCESS
            }
            Err(code) => code,
        },
        Command::Spec {
            command:
                SpecCommand::List {
                    specfile,
                    json,
                    rpmspec,
                    defines,
                },
        } => spec_check::list(&specfile, &defines.define, json, rpmspec),
        Command::Spec {
            command:
                SpecCommand::Check {
                    specfile,
                    dir,
                    sources,
                    json,
                    server,
                    defines,
                },
        } => runtime().block_on(spec_check::check(&spec_check::CheckOptions {
            spec: specfile,
            dir,
            sources,
            server: server.server,
            json,
            defines: defines.define,
        })),
    }
}

/// Run `f` on the data directory without serving (`crate::offline` checks it first).
fn offline(
    config: &ConfigArg,
    data_dir: Option<PathBuf>,
    command: Offline,
    f: impl FnOnce(&crate::offline::DataDir) -> Result<ExitCode, String>,
) -> ExitCode {
    let mut cfg = match load_config(config.config.as_deref()) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(d) = data_dir {
        cfg.storage.data_dir = d;
    }
    let _log = init_tracing(&cfg);
    crate::offline::run(cfg, command, &runtime(), f)
}

/// `upcache token new NAME --scope ...`
fn token_new(name: &str, scopes: &[String]) -> ExitCode {
    if let Some(bad) = scopes
        .iter()
        .find(|s| !["upload", "admin"].contains(&s.as_str()))
    {
        eprintln!("upcache: unknown scope {bad:?} (use upload, admin)");
        return ExitCode::from(2);
    }
    let (token, sha256) = crate::auth::new_token();
    println!("token: {token}");
    println!();
    println!("# add to the server configuration (only the hash is stored there):");
    println!("[[auth.tokens]]");
    println!("name = {}", toml_string(name));
    println!("sha256 = \"{sha256}\"");
    let scopes: Vec<String> = scopes.iter().map(|s| toml_string(s)).collect();
    println!("scopes = [{}]", scopes.join(", "));
    ExitCode::SUCCESS
}

/// `upcache ca new --out DIR`: exit 1 (nothing overwritten) if either file exists.
fn ca_new(out: &Path) -> ExitCode {
    let (cert, key) = match crate::intercept::ca::create(out) {
        Ok(paths) => paths,
        Err(e) => {
            eprintln!("upcache: {e}");
            return ExitCode::from(1);
        }
    };
    println!("wrote {} (install it on the clients)", cert.display());
    println!("wrote {} (mode 0600; keep it secret)", key.display());
    println!();
    println!("# add to the server configuration:");
    println!("[proxy]");
    println!("connect = \"intercept\"");
    println!("ca_cert = {}", toml_string(&cert.display().to_string()));
    println!("ca_key = {}", toml_string(&key.display().to_string()));
    ExitCode::SUCCESS
}

fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_owned()).to_string()
}

fn load_config(path: Option<&Path>) -> Result<Config, ExitCode> {
    Config::load(path).map_err(|e| {
        eprintln!("upcache: invalid configuration: {e}");
        ExitCode::from(1)
    })
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .thread_name("upcache-bg")
        .build()
        .expect("cannot start the tokio runtime")
}

/// Log to stderr through a background writer thread, so a request never waits for a
/// terminal or pipe. Keep the returned guard alive: dropping it flushes what is queued.
fn init_tracing(cfg: &Config) -> tracing_appender::non_blocking::WorkerGuard {
    let filter = tracing_subscriber::EnvFilter::try_from_default_env()
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new(&cfg.log.level));
    let (writer, guard) = tracing_appender::non_blocking::NonBlockingBuilder::default()
        .lossy(true)
        .thread_name("upcache-log")
        .finish(std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::stderr().is_terminal())
        .with_writer(writer);
    let _ = match cfg.log.format {
        LogFormat::Json => builder.json().flatten_event(true).try_init(),
        LogFormat::Text => builder.try_init(),
    };
    guard
}

/// Raise the soft open-files limit to the hard one, as nginx's `worker_rlimit_nofile` does:
/// hundreds of builders each hold a connection, and the default soft limit is often 1024.
fn raise_fd_limit() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit read and write the struct we pass.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                tracing::warn!("cannot raise the open-files limit");
            }
        }
    }
}

async fn serve(cfg: Config) -> ExitCode {
    raise_fd_limit();
    let listen = cfg.server.listen.clone();
    let app = match Service::open(cfg, tokio::runtime::Handle::current()) {
        Ok(app) => app,
        Err(e) => {
            // Once, on stderr: a log line as well would say the same thing twice there.
            eprintln!("upcache: cannot open the data directory: {e}");
            return ExitCode::from(1);
        }
    };
    let listener = match std::net::TcpListener::bind(&listen) {
        Ok(l) => l,
        Err(e) => {
            eprintln!("upcache: cannot listen on {listen}: {e}");
            return ExitCode::from(1);
        }
    };
    let server = match Server::start(app.clone(), listener) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("upcache: cannot start the HTTP server: {e}");
            return ExitCode::from(1);
        }
    };
    // A stable line for scripts and tests (the port may have been chosen by the OS).
    println!("upcache listening on http://{}", server.addr);
    crate::spawn_background(&app);
    shutdown_signal().await;
    // Stop accepting; connections in progress get the grace period to finish, then fills
    // and background workers get what is left of it.
    info!("shutting down");
    let deadline = std::time::Instant::now() + crate::service::workers::SHUTDOWN_GRACE;
    server.stop(true).await;
    app.shutdown(deadline.saturating_duration_since(std::time::Instant::now()))
        .await;
    match app.cache.index.flush_blocking() {
        Err(e) => error!(error = %e, "cannot flush the index"),
        // Only a flushed index lets the next start skip the full walk.
        Ok(()) => {
            if let Err(e) = app.cache.mark_clean_shutdown() {
                tracing::warn!(error = %e, "cannot write the clean-shutdown marker");
            }
        }
    }
    ExitCode::SUCCESS
}

async fn shutdown_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn command_line_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }

    /// Every command says what it does and every argument has help text, so that `--help`
    /// never shows a bare `<FILE>` (commands added later are held to the same rule).
    #[test]
    fn every_command_and_argument_has_help() {
        use clap::CommandFactory;
        fn walk(cmd: &clap::Command, path: &str, missing: &mut Vec<String>) {
            if cmd.get_about().is_none() {
                missing.push(format!("{path} (the command)"));
            }
            for arg in cmd.get_arguments() {
                let id = arg.get_id().as_str();
                if matches!(id, "help" | "version") {
                    continue;
                }
                let help = arg.get_help().or(arg.get_long_help());
                if help.is_none_or(|h| h.to_string().trim().is_empty()) {
                    missing.push(format!("{path} {id}"));
                }
            }
            for sub in cmd.get_subcommands() {
                walk(sub, &format!("{path} {}", sub.get_name()), missing);
            }
        }
        let mut missing = Vec::new();
        walk(&Cli::command(), "upcache", &mut missing);
        assert!(missing.is_empty(), "no help text: {missing:#?}");
    }
}
