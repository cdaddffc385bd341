//! `duet serve`: the signaling server and the browser client on one
//! listener, with TURN credentials for the peers when told of a TURN server.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context as _, bail};
use duet_call::{IceServer, IceServerError};
use duet_signal::{RedisConfig, ServerConfig, SignalServer, TlsFiles, TurnConfig};

/// Where the TURN secret may come from besides the command line, which other
/// users of the machine can read in the process list.
pub const TURN_SECRET_ENV: &str = "DUET_TURN_SECRET";

/// The options of `duet serve` (`docs/cli.md`).
#[derive(Debug, clap::Args)]
pub struct ServeArgs {
    /// Address and port to listen on; port 0 picks a free port.
    #[arg(long, value_name = "ADDR:PORT", default_value = "127.0.0.1:8787")]
    listen: SocketAddr,
    /// PEM certificate chain: serve wss:// instead of ws://.
    #[arg(long, value_name = "PEM", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, value_name = "PEM", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// A TURN server to hand every peer short-lived credentials for
    /// (turn:HOST:PORT); repeatable. Needs the secret the TURN server shares
    /// (coturn: use-auth-secret, static-auth-secret).
    #[arg(long, value_name = "URL")]
    turn_url: Vec<String>,
    /// The secret shared with the TURN server. Prefer --turn-secret-file or
    /// the DUET_TURN_SECRET environment variable: a command line is visible
    /// to every user of the machine.
    #[arg(long, value_name = "SECRET", conflicts_with = "turn_secret_file")]
    turn_secret: Option<String>,
    /// A file whose first line is the secret shared with the TURN server.
    #[arg(long, value_name = "FILE")]
    turn_secret_file: Option<PathBuf>,
    /// A web origin (`https://example.org`) whose pages may open /ws besides
    /// the server's own; repeatable. Programs that send no Origin (the app)
    /// are always let in.
    #[arg(long, value_name = "ORIGIN")]
    allow_origin: Vec<String>,
    /// Open connections allowed from one client address (an IPv4 address or
    /// an IPv6 /64). Behind a reverse proxy every client has the proxy's address.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().max_connections_per_address,
          value_parser = positive)]
    max_connections_per_ip: usize,
    /// Connections allowed at once that have not finished their WebSocket upgrade.
    #[arg(long, value_name = "N", default_value_t = ServerConfig::default().max_pending_connections,
          value_parser = positive)]
    max_pending: usize,
    /// How long the handed-out credentials stay valid, in seconds.
    #[arg(long, value_name = "SECS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(60..=7 * 24 * 3600))]
    turn_ttl: u64,
    /// Share rooms with other `duet serve` instances through this Redis
    /// (redis://HOST:PORT[/DB]): put several behind a load balancer. Without
    /// it, rooms live in this process only.
    #[arg(long, value_name = "URL", value_parser = redis_url)]
    redis: Option<String>,
    /// Every connection starts with a PROXY protocol v1 header (HAProxy's
    /// send-proxy) naming the client's address, which the per-address limits
    /// then count. Only for a server that nothing but the load balancer can reach.
    #[arg(long)]
    proxy_protocol: bool,
}

/// A `redis://` URL (TLS to Redis is not built in: keep Redis on a private network).
fn redis_url(value: &str) -> Result<String, String> {
    let host = value
        .strip_prefix("redis://")
        .map(|rest| rest.rsplit('@').next().unwrap_or_default())
        .and_then(|rest| rest.split(['/', ':']).next())
        .unwrap_or_default();
    if host.is_empty() {
        return Err(format!("{value:?} is not a redis://HOST:PORT URL"));
    }
    Ok(value.to_owned())
}

/// A count of at least one (none would refuse everyone).
fn positive(value: &str) -> Result<usize, String> {
    match value.parse::<usize>() {
        Ok(n) if n > 0 => Ok(n),
        _ => Err(format!("{value:?} is not a count of at least 1")),
    }
}

impl ServeArgs {
    /// The TURN part of the server's configuration, checked.
    fn turn(&self) -> anyhow::Result<Option<TurnConfig>> {
        let secret = match (&self.turn_secret, &self.turn_secret_file) {
            (Some(secret), _) => Some(secret.clone()),
            (None, Some(path)) => {
                let text = std::fs::read_to_string(path).with_context(|| {
                    format!("cannot read the TURN secret from {}", path.display())
                })?;
                Some(text.lines().next().unwrap_or_default().trim().to_owned())
            }
            (None, None) => std::env::var(TURN_SECRET_ENV).ok(),
        }
        .filter(|secret| !secret.is_empty());
        turn_config(&self.turn_url, secret, Duration::from_secs(self.turn_ttl))
    }
}

/// `urls` and `secret` as a [`TurnConfig`]: both or neither.
fn turn_config(
    urls: &[String],
    secret: Option<String>,
    ttl: Duration,
) -> anyhow::Result<Option<TurnConfig>> {
    match (urls.is_empty(), secret) {
        (true, None) => Ok(None),
        (true, Some(_)) => bail!("a TURN secret without --turn-url: which TURN server is it for?"),
        (false, None) => bail!(
            "--turn-url needs the secret shared with the TURN server: --turn-secret-file FILE, \
             {TURN_SECRET_ENV}, or --turn-secret"
        ),
        (false, Some(secret)) => {
            for url in urls {
                if url.contains('@') {
                    bail!(
                        "--turn-url {url:?}: no user or password in the URL; the server makes them"
                    );
                }
                // The peers' own rules for a server (`turns:` and TCP are
                // refused there too); its credentials are the server's to add.
                match IceServer::from_parts(url, "", "") {
                    Err(IceServerError::NoCredentials(_)) => {}
                    Err(err) => bail!("--turn-url: {err}"),
                    Ok(_) => bail!("--turn-url {url:?}: a TURN URL is turn:HOST:PORT"),
                }
            }
            Ok(Some(TurnConfig {
                urls: urls.to_vec(),
                secret,
                ttl,
            }))
        }
    }
}

/// Runs the server until SIGINT or SIGTERM.
pub async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    // Each connection is a file descriptor; the default soft limit (often 1024) is far too low.
    if let Err(err) = rlimit::increase_nofile_limit(u64::MAX) {
        tracing::warn!(%err, "could not raise the open-file limit");
    }
    let config = ServerConfig {
        turn: args.turn()?,
        allowed_origins: args.allow_origin.clone(),
        max_connections_per_address: args.max_connections_per_ip,
        max_pending_connections: args.max_pending,
        redis: args.redis.clone().map(RedisConfig::new),
        proxy_protocol: args.proxy_protocol,
        ..ServerConfig::default()
    };
    let tls = match (args.tls_cert, args.tls_key) {
        (Some(cert), Some(key)) => Some(TlsFiles { cert, key }),
        _ => None,
    };
    if let Some(turn) = &config.turn {
        tracing::info!(urls = ?turn.urls, ttl_s = turn.ttl.as_secs(), "handing out TURN credentials");
    }
    // Signaling and the browser client on one listener: the page connects
    // back to the server that served it.
    let server =
        SignalServer::bind(args.listen, tls.as_ref(), config)?.with_routes(duet_web::routes());
    // The first line of output is the address, for scripts that start the server on port 0.
    println!("{}", server.local_addr());
    let http = server.url().replacen("ws", "http", 1);
    tracing::info!(
        "signaling at {}/ws, browser client at {http}/, health check at {http}/healthz",
        server.url(),
    );
    server.run(crate::shutdown_signal()).await?;
    tracing::info!("stopped");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOUR: Duration = Duration::from_secs(3600);

    #[test]
    fn turn_needs_both_a_url_and_a_secret() {
        assert_eq!(turn_config(&[], None, HOUR).ok(), Some(None));
        let urls = vec!["turn:10.0.0.1:3478".to_owned()];
        let err = turn_config(&urls, None, HOUR).expect_err("no secret");
        assert!(err.to_string().contains("--turn-secret-file"), "{err}");
        assert!(turn_config(&[], Some("s".into()), HOUR).is_err());
        let config = turn_config(&urls, Some("s".into()), HOUR)
            .expect("valid")
            .expect("configured");
        assert_eq!(config.urls, urls);
        assert_eq!(config.ttl, HOUR);
    }

    #[test]
    fn only_redis_urls_with_a_host_are_taken() {
        assert!(redis_url("redis://127.0.0.1:6379").is_ok());
        assert!(redis_url("redis://cache.internal/2").is_ok());
        for bad in ["127.0.0.1:6379", "http://x:6379", "redis://", "nonsense"] {
            assert!(redis_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn turn_urls_the_peers_cannot_use_are_refused() {
        for url in [
            "turns:10.0.0.1:5349",
            "turn:u:p@10.0.0.1:3478",
            "turn:10.0.0.1:3478?transport=tcp",
            "10.0.0.1:3478",
        ] {
            assert!(
                turn_config(&[url.to_owned()], Some("s".into()), HOUR).is_err(),
                "{url}"
            );
        }
    }
}
