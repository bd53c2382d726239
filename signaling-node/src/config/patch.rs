//! One layer of settings ([`SettingsPatch`]): the TOML file schema, the `serve` flags and
//! `SWITCHBOARD_*` environment variables at once, plus the operator's [`ClusterSettings`].

use std::fmt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

use serde::Deserialize;
use switchboard_contract::ClusterSettings;

use super::{ConfigError, invalid};
use crate::cluster::ClusterArgs;

/// A duration written with a unit (`ms`, `s`, `m`, `h`), e.g. `"30s"`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Dur(pub Duration);

impl FromStr for Dur {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let s = s.trim();
        let split = s
            .find(|c: char| !c.is_ascii_digit())
            .ok_or_else(|| format!("duration {s:?} needs a unit (ms, s, m or h), e.g. \"30s\""))?;
        let (number, unit) = s.split_at(split);
        let number: u64 = number
            .parse()
            .map_err(|_| format!("duration {s:?} must start with a whole number"))?;
        let millis = match unit.trim() {
            "ms" => Some(number),
            "s" => number.checked_mul(1_000),
            "m" => number.checked_mul(60_000),
            "h" => number.checked_mul(3_600_000),
            other => return Err(format!("unknown duration unit {other:?} (ms, s, m or h)")),
        }
        .ok_or_else(|| format!("duration {s:?} is too long"))?;
        Ok(Dur(Duration::from_millis(millis)))
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.0.as_millis();
        if ms.is_multiple_of(1_000) {
            write!(f, "{}s", ms / 1_000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let s = String::deserialize(deserializer)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Log output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogFormat {
    /// Human-readable lines.
    #[default]
    Text,
    /// One JSON object per line.
    Json,
}

/// Flags of `signaling-node serve`: the settings file, every setting as a flag / env var, and
/// the etcd flags of cluster mode ([`ClusterArgs`]; given only as flags / env vars, since they
/// decide where the node's state lives and cannot change while it runs).
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML settings file; watched and hot-reloaded (flags and env vars keep precedence).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Every setting.
    #[command(flatten)]
    pub settings: SettingsPatch,
    /// etcd connection of cluster mode (none: standalone).
    #[command(flatten)]
    pub cluster: ClusterArgs,
    /// Span export over OTLP (off unless an endpoint is set).
    #[command(flatten)]
    pub trace: switchboard_telemetry::TraceArgs,
    /// Serve the browser co-host demo at /demo on the admin port, with a token endpoint that
    /// mints tokens for anyone who asks: for demos and tests only, never in production.
    #[arg(long, env = "SWITCHBOARD_DEMO")]
    pub demo: bool,
}

/// One layer of settings: every field optional. It is the TOML file schema, the `serve` flag
/// set and the environment at once.
#[derive(Debug, Clone, Default, PartialEq, clap::Args, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SettingsPatch {
    /// Signaling WebSocket listen address [default: 0.0.0.0:7000].
    #[arg(long, env = "SWITCHBOARD_LISTEN")]
    pub listen: Option<SocketAddr>,
    /// Admin HTTP listen address (/metrics, /healthz, /readyz) [default: 0.0.0.0:9100].
    #[arg(long, env = "SWITCHBOARD_ADMIN_LISTEN")]
    pub admin_listen: Option<SocketAddr>,
    /// WebTransport (HTTP/3) listen address, UDP; needs --tls-cert and a build with the
    /// `webtransport` feature [default: off].
    #[arg(long, env = "SWITCHBOARD_WEBTRANSPORT_LISTEN")]
    pub webtransport_listen: Option<SocketAddr>,
    /// This node's name (the pod name in Kubernetes) [default: the host name].
    #[arg(long, env = "POD_NAME")]
    pub node_name: Option<String>,
    /// WebSocket URL clients are redirected to for rooms this node owns
    /// [default: ws(s)://LISTEN_IP_OR_NODE_NAME:PORT/ws].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// More WebSocket paths to accept besides `/ws` and the advertised URL's path,
    /// comma-separated (the entry URL's path behind a proxy that forwards paths unchanged).
    #[arg(long, env = "SWITCHBOARD_WS_PATHS")]
    pub ws_paths: Option<String>,
    /// Number of room shards (rooms hash into 0..shard-count) [default: 16].
    #[arg(long, env = "SWITCHBOARD_SHARD_COUNT")]
    pub shard_count: Option<u32>,
    /// File holding the JWT HS256 secret (surrounding whitespace ignored).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// The JWT HS256 secret itself (prefer --jwt-secret-file).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// Directory of join-token keys, as a mounted Secret lays it out: `secret` (one key, no
    /// kid) and/or `keys.json` (a JWK set of HS256 keys with `kid` and optional `exp`); a file
    /// that is absent is skipped. Watched and hot-reloaded, like --jwt-secret-file.
    #[arg(long, env = "SWITCHBOARD_JWT_KEYS_DIR")]
    pub jwt_keys_dir: Option<PathBuf>,
    /// Clock-skew leeway for a token's `exp` and `nbf` [default: 30s]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_JWT_LEEWAY")]
    pub jwt_leeway: Option<Dur>,
    /// When set, a token's `aud` must be (or list) this audience. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_JWT_AUDIENCE")]
    pub jwt_audience: Option<String>,
    /// When set, a token's `iss` must be this issuer. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_JWT_ISSUER")]
    pub jwt_issuer: Option<String>,
    /// PEM certificate chain; with --tls-key the node serves wss://.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long a graceful drain may take before the process exits anyway [default: 10s].
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<Dur>,
    /// Drain deadline in whole seconds (what the operator's pods set); --drain-timeout wins.
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT_SECONDS", hide = true)]
    pub drain_timeout_seconds: Option<u64>,
    /// Log format [default: text].
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,
    /// Protocol versions served, comma-separated (`v1,v2`, `1,2` or subprotocol names)
    /// [default: every version this build speaks].
    #[arg(long, env = "SWITCHBOARD_PROTOCOLS")]
    pub protocols: Option<String>,
    /// Rollout version (pool) this node belongs to, published in its cluster registration
    /// [default: "default"].
    #[arg(long, env = "SWITCHBOARD_VERSION")]
    pub pool_version: Option<String>,

    /// Interval between server heartbeat Pings [default: 30s]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_HEARTBEAT_INTERVAL")]
    pub heartbeat_interval: Option<Dur>,
    /// A connection silent for longer is evicted [default: 5m]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_IDLE_TIMEOUT")]
    pub idle_timeout: Option<Dur>,
    /// Time allowed for the TCP/TLS + WebSocket handshake [default: 10s]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_HANDSHAKE_TIMEOUT")]
    pub handshake_timeout: Option<Dur>,
    /// Time allowed between the handshake and the client's Hello [default: 10s].
    /// Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_HELLO_TIMEOUT")]
    pub hello_timeout: Option<Dur>,
    /// An unanswered invite times out after this [default: 30s]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_INVITE_TIMEOUT")]
    pub invite_timeout: Option<Dur>,
    /// Offer/answer/ICE must complete within this [default: 15s]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_NEGOTIATION_TIMEOUT")]
    pub negotiation_timeout: Option<Dur>,
    /// How long a dropped session may resume before its member is removed [default: 60s].
    /// Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_RESUME_WINDOW")]
    pub resume_window: Option<Dur>,
    /// Maximum concurrent connections; more are closed with 1013 [default: 100000].
    /// Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_MAX_CONNECTIONS")]
    pub max_connections: Option<usize>,
    /// Maximum live rooms on this node; more joins get 1010 [default: 100000].
    /// Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS")]
    pub max_rooms: Option<usize>,
    /// Maximum members of one room; more joins get 1005 [default: 16]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOM_MEMBERS")]
    pub max_room_members: Option<usize>,
    /// Maximum live calls in one room; more invites get 1005 [default: 64]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOM_CALLS")]
    pub max_room_calls: Option<usize>,
    /// Maximum rooms one session may be in at once; more joins get 1005 [default: 16].
    /// Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_MAX_ROOMS_PER_SESSION")]
    pub max_rooms_per_session: Option<usize>,
    /// Outbound frames queued per connection before it is dropped as a slow consumer
    /// [default: 256]. Applies to new connections.
    #[arg(long, env = "SWITCHBOARD_OUTBOUND_QUEUE")]
    pub outbound_queue: Option<usize>,
    /// Commands queued per room actor [default: 1024]. Applies to new rooms.
    #[arg(long, env = "SWITCHBOARD_ROOM_QUEUE")]
    pub room_queue: Option<usize>,
    /// Recent room events kept for resume replay and in snapshots [default: 256].
    /// Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_EVENT_RING")]
    pub event_ring: Option<usize>,
    /// Sustained client messages per second per connection [default: 50]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_RATE_LIMIT")]
    pub rate_limit: Option<u32>,
    /// Burst of client messages allowed above the rate [default: 100]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_RATE_BURST")]
    pub rate_burst: Option<u32>,
    /// Rate-limited messages (since the bucket was last full) after which the connection is
    /// closed with 1008 [default: 200]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_FLOOD_CLOSE_AFTER")]
    pub flood_close_after: Option<u32>,
    /// Consecutive bad frames after which the connection is closed with 1002 [default: 5].
    /// Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_MAX_BAD_FRAMES")]
    pub max_bad_frames: Option<u32>,
    /// Largest SDP accepted in an Offer/Answer, bytes [default: 32768]. Hot-reloadable.
    #[arg(long, env = "SWITCHBOARD_MAX_SDP_BYTES")]
    pub max_sdp_bytes: Option<usize>,
}

impl SettingsPatch {
    /// The hot-reloadable settings the operator writes to etcd `config`, as a layer (a
    /// setting the operator did not send stays unset). A count too large for this platform is
    /// an error.
    pub fn from_cluster_settings(settings: &ClusterSettings) -> Result<Self, ConfigError> {
        let secs = |n: Option<u64>| n.map(|n| Dur(Duration::from_secs(n)));
        let count = |name: &str, n: Option<u64>| {
            n.map(usize::try_from)
                .transpose()
                .map_err(|_| invalid("cluster config", format!("{name} is too large")))
        };
        Ok(SettingsPatch {
            heartbeat_interval: secs(settings.heartbeat_seconds),
            idle_timeout: secs(settings.idle_timeout_seconds),
            invite_timeout: secs(settings.invite_timeout_seconds),
            negotiation_timeout: secs(settings.negotiation_timeout_seconds),
            resume_window: secs(settings.resume_window_seconds),
            max_connections: count("maxConnections", settings.max_connections)?,
            max_rooms: count("maxRooms", settings.max_rooms)?,
            max_room_members: count("roomSize", settings.room_size)?,
            rate_limit: settings.messages_per_second,
            ..SettingsPatch::default()
        })
    }

    /// Parses a TOML settings file's contents.
    pub fn from_toml(text: &str) -> Result<Self, ConfigError> {
        toml::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))
    }

    /// Overlays `other` on `self` (fields set in `other` win).
    pub fn merge(&mut self, other: &SettingsPatch) {
        macro_rules! take {
            ($($field:ident),* $(,)?) => {
                $(if other.$field.is_some() { self.$field = other.$field.clone(); })*
            };
        }
        take!(
            listen,
            admin_listen,
            webtransport_listen,
            node_name,
            advertise_url,
            ws_paths,
            shard_count,
            jwt_secret_file,
            jwt_secret,
            jwt_keys_dir,
            jwt_leeway,
            jwt_audience,
            jwt_issuer,
            tls_cert,
            tls_key,
            drain_timeout,
            drain_timeout_seconds,
            log_format,
            protocols,
            pool_version,
            heartbeat_interval,
            idle_timeout,
            handshake_timeout,
            hello_timeout,
            invite_timeout,
            negotiation_timeout,
            resume_window,
            max_connections,
            max_rooms,
            max_room_members,
            max_room_calls,
            max_rooms_per_session,
            outbound_queue,
            room_queue,
            event_ring,
            rate_limit,
            rate_burst,
            flood_close_after,
            max_bad_frames,
            max_sdp_bytes,
        );
    }
}
