//! Node settings: built-in defaults, the TOML file (`--config`), and flags / `SWITCHBOARD_*`
//! environment variables, merged in that order (later wins); plus hot reload of the file.
//!
//! Every setting is one field of [`SettingsPatch`], which is at once the TOML schema (snake_case
//! keys, unknown keys rejected), the clap flag set (`--kebab-case`) and the environment
//! (`SWITCHBOARD_UPPER_CASE`). [`Settings::resolve`] folds patches over the defaults and
//! validates the result. Durations are strings with a unit: `"250ms"`, `"30s"`, `"5m"`, `"1h"`.
//!
//! Hot reload ([`ConfigHandle`]): the file and the JWT secret file are polled (mtime + size,
//! every second) and re-resolved; the [`Tunables`] and the JWT secret apply at once through a
//! `tokio::sync::watch` of [`Settings`] that connections and rooms read. Static settings
//! (addresses, node identity, shard count, TLS files) keep their startup values; a change to
//! them is logged as needing a restart. An invalid file is logged, counted in
//! `switchboard_config_reload_errors_total`, and the last good settings stay. Flags and env
//! vars keep precedence over the file across reloads. Cluster mode adds a "remote" layer (the
//! operator's config in etcd) between the file and the flags with [`ConfigHandle::set_remote`].

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use serde::Deserialize;
use tokio::sync::watch;

use crate::auth::{AuthError, JwtSecret};
use crate::metrics::Metrics;

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

/// Flags of `signaling-node serve`: the settings file plus every setting as a flag / env var.
/// Cluster mode adds its settings (etcd endpoints, namespace, cluster) as fields of
/// [`SettingsPatch`], so they are file keys, flags and env vars alike.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// TOML settings file; watched and hot-reloaded (flags and env vars keep precedence).
    #[arg(long, env = "SWITCHBOARD_CONFIG")]
    pub config: Option<PathBuf>,
    /// Every setting.
    #[command(flatten)]
    pub settings: SettingsPatch,
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
    /// This node's name (the pod name in Kubernetes) [default: the host name].
    #[arg(long, env = "POD_NAME")]
    pub node_name: Option<String>,
    /// WebSocket URL clients are redirected to for rooms this node owns
    /// [default: ws(s)://<listen ip or node name>:<port>/ws].
    #[arg(long, env = "SWITCHBOARD_ADVERTISE_URL")]
    pub advertise_url: Option<String>,
    /// Number of room shards (rooms hash into 0..shard-count) [default: 16].
    #[arg(long, env = "SWITCHBOARD_SHARD_COUNT")]
    pub shard_count: Option<u32>,
    /// File holding the JWT HS256 secret (surrounding whitespace ignored).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET_FILE")]
    pub jwt_secret_file: Option<PathBuf>,
    /// The JWT HS256 secret itself (prefer --jwt-secret-file).
    #[arg(long, env = "SWITCHBOARD_JWT_SECRET", hide_env_values = true)]
    pub jwt_secret: Option<String>,
    /// PEM certificate chain; with --tls-key the node serves wss://.
    #[arg(long, env = "SWITCHBOARD_TLS_CERT", requires = "tls_key")]
    pub tls_cert: Option<PathBuf>,
    /// PEM private key for --tls-cert.
    #[arg(long, env = "SWITCHBOARD_TLS_KEY", requires = "tls_cert")]
    pub tls_key: Option<PathBuf>,
    /// How long a graceful drain may take before the process exits anyway [default: 10s].
    #[arg(long, env = "SWITCHBOARD_DRAIN_TIMEOUT")]
    pub drain_timeout: Option<Dur>,
    /// Log format [default: text].
    #[arg(long, env = "SWITCHBOARD_LOG_FORMAT", value_enum)]
    pub log_format: Option<LogFormat>,

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
    /// WebSocket read buffer per connection, bytes [default: 4096]. Applies to new
    /// connections.
    #[arg(long, env = "SWITCHBOARD_READ_BUFFER")]
    pub read_buffer: Option<usize>,
    /// WebSocket write buffer per connection, bytes [default: 4096]. Applies to new
    /// connections.
    #[arg(long, env = "SWITCHBOARD_WRITE_BUFFER")]
    pub write_buffer: Option<usize>,
}

impl SettingsPatch {
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
            node_name,
            advertise_url,
            shard_count,
            jwt_secret_file,
            jwt_secret,
            tls_cert,
            tls_key,
            drain_timeout,
            log_format,
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
            read_buffer,
            write_buffer,
        );
    }
}

/// The hot-reloadable part of the settings.
#[derive(Debug, Clone, PartialEq)]
pub struct Tunables {
    /// Interval between server heartbeat Pings.
    pub heartbeat_interval: Duration,
    /// A connection silent for longer is evicted.
    pub idle_timeout: Duration,
    /// Time allowed for the TLS + WebSocket handshake.
    pub handshake_timeout: Duration,
    /// Time allowed between the handshake and Hello.
    pub hello_timeout: Duration,
    /// Unanswered invites time out after this.
    pub invite_timeout: Duration,
    /// Negotiation must complete within this.
    pub negotiation_timeout: Duration,
    /// Resume window of a dropped session.
    pub resume_window: Duration,
    /// Maximum concurrent connections.
    pub max_connections: usize,
    /// Maximum live rooms on this node.
    pub max_rooms: usize,
    /// Maximum members per room.
    pub max_room_members: usize,
    /// Maximum live calls per room.
    pub max_room_calls: usize,
    /// Maximum rooms per session.
    pub max_rooms_per_session: usize,
    /// Outbound queue length per connection (new connections).
    pub outbound_queue: usize,
    /// Command queue length per room actor (new rooms).
    pub room_queue: usize,
    /// Recent events kept per room.
    pub event_ring: usize,
    /// Sustained client messages per second.
    pub rate_limit: u32,
    /// Message burst above the rate.
    pub rate_burst: u32,
    /// Rate-limited messages before a 1008 close.
    pub flood_close_after: u32,
    /// Consecutive bad frames before a 1002 close.
    pub max_bad_frames: u32,
    /// Largest SDP accepted, bytes.
    pub max_sdp_bytes: usize,
    /// WebSocket read buffer, bytes (new connections).
    pub read_buffer: usize,
    /// WebSocket write buffer, bytes (new connections).
    pub write_buffer: usize,
}

impl Default for Tunables {
    fn default() -> Self {
        Self {
            heartbeat_interval: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(300),
            handshake_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(10),
            invite_timeout: Duration::from_secs(30),
            negotiation_timeout: Duration::from_secs(15),
            resume_window: Duration::from_secs(60),
            max_connections: 100_000,
            max_rooms: 100_000,
            max_room_members: 16,
            max_room_calls: 64,
            max_rooms_per_session: 16,
            outbound_queue: 256,
            room_queue: 1024,
            event_ring: 256,
            rate_limit: 50,
            rate_burst: 100,
            flood_close_after: 200,
            max_bad_frames: 5,
            max_sdp_bytes: 32 * 1024,
            read_buffer: 4096,
            write_buffer: 4096,
        }
    }
}

/// TLS certificate and key files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TlsFiles {
    /// PEM certificate chain.
    pub cert: PathBuf,
    /// PEM private key.
    pub key: PathBuf,
}

/// The resolved, validated settings of a node.
#[derive(Debug, Clone, PartialEq)]
pub struct Settings {
    /// Signaling WebSocket listen address.
    pub listen: SocketAddr,
    /// Admin HTTP listen address.
    pub admin_listen: SocketAddr,
    /// This node's name.
    pub node_name: String,
    /// URL clients are redirected to for this node's rooms.
    pub advertise_url: String,
    /// Number of room shards.
    pub shard_count: u32,
    /// Where the JWT secret was read from (None: given literally).
    pub jwt_secret_file: Option<PathBuf>,
    /// The JWT HS256 secret (hot-reloaded from its file).
    pub jwt_secret: JwtSecret,
    /// TLS files, if the node serves wss://.
    pub tls: Option<TlsFiles>,
    /// Graceful drain deadline.
    pub drain_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Hot-reloadable limits and timeouts.
    pub tunables: Tunables,
}

/// Why settings could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A file could not be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// The TOML is invalid or has unknown keys.
    #[error("invalid settings file: {0}")]
    Parse(String),
    /// A value is out of range.
    #[error("invalid setting {field}: {reason}")]
    Invalid {
        /// The setting.
        field: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// No JWT secret was given, or it is empty.
    #[error("JWT secret: {0} (pass --jwt-secret-file or SWITCHBOARD_JWT_SECRET)")]
    Secret(#[from] AuthError),
    /// No JWT secret was given at all.
    #[error("no JWT secret: pass --jwt-secret-file or SWITCHBOARD_JWT_SECRET")]
    MissingSecret,
}

impl ConfigError {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Parse(_) => "parse",
            ConfigError::Invalid { .. } => "invalid",
            ConfigError::Secret(_) | ConfigError::MissingSecret => "secret",
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

fn default_node_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "signaling-node".to_owned())
}

impl Settings {
    /// Default settings with the given secret (tests and embedders).
    pub fn new(jwt_secret: JwtSecret) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
            node_name: "signaling-node".to_owned(),
            advertise_url: "ws://127.0.0.1:7000/ws".to_owned(),
            shard_count: 16,
            jwt_secret_file: None,
            jwt_secret,
            tls: None,
            drain_timeout: Duration::from_secs(10),
            log_format: LogFormat::Text,
            tunables: Tunables::default(),
        }
    }

    /// Folds `patch` over the defaults, reads the secret file and validates.
    pub fn resolve(patch: &SettingsPatch) -> Result<Self, ConfigError> {
        let secret = match (&patch.jwt_secret, &patch.jwt_secret_file) {
            (Some(literal), _) => JwtSecret::new(literal.as_bytes().to_vec())?,
            (None, Some(path)) => {
                let bytes = std::fs::read(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                JwtSecret::from_file_contents(&bytes)?
            }
            (None, None) => return Err(ConfigError::MissingSecret),
        };
        let mut s = Settings::new(secret);
        s.jwt_secret_file = patch.jwt_secret_file.clone();
        if let Some(v) = patch.listen {
            s.listen = v;
        }
        if let Some(v) = patch.admin_listen {
            s.admin_listen = v;
        }
        s.node_name = patch.node_name.clone().unwrap_or_else(default_node_name);
        if let Some(v) = patch.shard_count {
            s.shard_count = v;
        }
        s.tls = match (&patch.tls_cert, &patch.tls_key) {
            (Some(cert), Some(key)) => Some(TlsFiles {
                cert: cert.clone(),
                key: key.clone(),
            }),
            (None, None) => None,
            _ => return Err(invalid("tls_cert", "tls_cert and tls_key go together")),
        };
        s.advertise_url = match &patch.advertise_url {
            Some(url) => url.clone(),
            None => {
                let scheme = if s.tls.is_some() { "wss" } else { "ws" };
                let host = if s.listen.ip().is_unspecified() {
                    s.node_name.clone()
                } else {
                    s.listen.ip().to_string()
                };
                format!("{scheme}://{host}:{}/ws", s.listen.port())
            }
        };
        if let Some(v) = patch.drain_timeout {
            s.drain_timeout = v.0;
        }
        if let Some(v) = patch.log_format {
            s.log_format = v;
        }
        let t = &mut s.tunables;
        macro_rules! set {
            ($($field:ident),* $(,)?) => { $(if let Some(v) = patch.$field { t.$field = v.into(); })* };
        }
        macro_rules! set_dur {
            ($($field:ident),* $(,)?) => { $(if let Some(v) = patch.$field { t.$field = v.0; })* };
        }
        set_dur!(
            heartbeat_interval,
            idle_timeout,
            handshake_timeout,
            hello_timeout,
            invite_timeout,
            negotiation_timeout,
            resume_window,
        );
        set!(
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
            read_buffer,
            write_buffer,
        );
        s.validate()?;
        Ok(s)
    }

    /// Checks ranges and relations between settings.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let t = &self.tunables;
        if self.shard_count == 0 {
            return Err(invalid("shard_count", "must be at least 1"));
        }
        if self.node_name.is_empty() {
            return Err(invalid("node_name", "must not be empty"));
        }
        for (field, d) in [
            ("heartbeat_interval", t.heartbeat_interval),
            ("idle_timeout", t.idle_timeout),
            ("handshake_timeout", t.handshake_timeout),
            ("hello_timeout", t.hello_timeout),
            ("invite_timeout", t.invite_timeout),
            ("negotiation_timeout", t.negotiation_timeout),
            ("resume_window", t.resume_window),
        ] {
            if d < Duration::from_millis(10) {
                return Err(invalid(field, "must be at least 10ms"));
            }
        }
        if t.idle_timeout <= t.heartbeat_interval {
            return Err(invalid(
                "idle_timeout",
                format!(
                    "must be longer than heartbeat_interval ({})",
                    Dur(t.heartbeat_interval)
                ),
            ));
        }
        if t.heartbeat_interval.as_millis() > u128::from(u32::MAX) {
            return Err(invalid(
                "heartbeat_interval",
                "must fit in u32 milliseconds",
            ));
        }
        for (field, v, min) in [
            ("max_connections", t.max_connections, 1),
            ("max_rooms", t.max_rooms, 1),
            ("max_room_members", t.max_room_members, 2),
            ("max_room_calls", t.max_room_calls, 1),
            ("max_rooms_per_session", t.max_rooms_per_session, 1),
            ("outbound_queue", t.outbound_queue, 8),
            ("room_queue", t.room_queue, 8),
            ("event_ring", t.event_ring, 1),
            ("max_sdp_bytes", t.max_sdp_bytes, 16),
            ("read_buffer", t.read_buffer, 256),
            ("write_buffer", t.write_buffer, 0),
        ] {
            if v < min {
                return Err(invalid(field, format!("must be at least {min}")));
            }
        }
        // Tokio's semaphore caps permits far above any sane limit; keep a round bound.
        if t.max_connections > 10_000_000 {
            return Err(invalid("max_connections", "must be at most 10000000"));
        }
        if t.rate_limit == 0 || t.rate_burst == 0 {
            return Err(invalid(
                "rate_limit",
                "rate_limit and rate_burst must be > 0",
            ));
        }
        if t.max_bad_frames == 0 || t.flood_close_after == 0 {
            return Err(invalid(
                "max_bad_frames",
                "max_bad_frames and flood_close_after must be > 0",
            ));
        }
        Ok(())
    }

    /// `self` with the hot-reloadable parts (tunables, JWT secret) taken from `next`; returns
    /// the names of static settings that differ (they need a restart).
    pub fn reloaded(&self, next: &Settings) -> (Settings, Vec<&'static str>) {
        let mut ignored = Vec::new();
        if self.listen != next.listen {
            ignored.push("listen");
        }
        if self.admin_listen != next.admin_listen {
            ignored.push("admin_listen");
        }
        if self.node_name != next.node_name {
            ignored.push("node_name");
        }
        if self.advertise_url != next.advertise_url {
            ignored.push("advertise_url");
        }
        if self.shard_count != next.shard_count {
            ignored.push("shard_count");
        }
        if self.tls != next.tls {
            ignored.push("tls");
        }
        if self.log_format != next.log_format {
            ignored.push("log_format");
        }
        if self.jwt_secret_file != next.jwt_secret_file {
            ignored.push("jwt_secret_file");
        }
        let mut merged = self.clone();
        merged.tunables = next.tunables.clone();
        merged.jwt_secret = next.jwt_secret.clone();
        merged.drain_timeout = next.drain_timeout;
        (merged, ignored)
    }
}

/// A receiver of the live settings; `borrow()` is cheap and never blocks writers for long.
pub type SettingsWatch = watch::Receiver<Arc<Settings>>;

/// Fingerprint of a file for change detection.
type Stamp = Option<(SystemTime, u64)>;

fn stamp(path: &Path) -> Stamp {
    std::fs::metadata(path)
        .ok()
        .and_then(|m| Some((m.modified().ok()?, m.len())))
}

struct Layers {
    file: Option<PathBuf>,
    remote: Option<SettingsPatch>,
    args: SettingsPatch,
    stamps: (Stamp, Stamp),
}

impl Layers {
    fn read_file(&self) -> Result<SettingsPatch, ConfigError> {
        match &self.file {
            None => Ok(SettingsPatch::default()),
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.clone(),
                    source,
                })?;
                SettingsPatch::from_toml(&text)
            }
        }
    }

    fn resolve(&self) -> Result<Settings, ConfigError> {
        let mut patch = self.read_file()?;
        if let Some(remote) = &self.remote {
            patch.merge(remote);
        }
        patch.merge(&self.args);
        Settings::resolve(&patch)
    }

    fn secret_path(&self, current: &Settings) -> Option<PathBuf> {
        current.jwt_secret_file.clone()
    }
}

/// Owner of the live settings: loads them, reloads them on file change, and publishes them on
/// a watch channel. Cheap to clone; every method is synchronous and short.
#[derive(Clone)]
pub struct ConfigHandle {
    layers: Arc<Mutex<Layers>>,
    tx: Arc<watch::Sender<Arc<Settings>>>,
}

impl fmt::Debug for ConfigHandle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ConfigHandle").finish_non_exhaustive()
    }
}

impl ConfigHandle {
    /// Loads settings from `file` (if any) overlaid with `args` (flags and env vars).
    pub fn load(args: SettingsPatch, file: Option<PathBuf>) -> Result<Self, ConfigError> {
        let mut layers = Layers {
            file,
            remote: None,
            args,
            stamps: (None, None),
        };
        let settings = layers.resolve()?;
        layers.stamps = (
            layers.file.as_deref().and_then(stamp),
            layers.secret_path(&settings).as_deref().and_then(stamp),
        );
        let (tx, _) = watch::channel(Arc::new(settings));
        Ok(Self {
            layers: Arc::new(Mutex::new(layers)),
            tx: Arc::new(tx),
        })
    }

    /// A handle publishing fixed `settings` (no file; tests and embedders).
    pub fn fixed(settings: Settings) -> Self {
        let (tx, _) = watch::channel(Arc::new(settings));
        Self {
            layers: Arc::new(Mutex::new(Layers {
                file: None,
                remote: None,
                args: SettingsPatch::default(),
                stamps: (None, None),
            })),
            tx: Arc::new(tx),
        }
    }

    /// The current settings.
    pub fn current(&self) -> Arc<Settings> {
        self.tx.borrow().clone()
    }

    /// A receiver of the live settings.
    pub fn subscribe(&self) -> SettingsWatch {
        self.tx.subscribe()
    }

    /// Replaces the tunables directly (embedders and tests; the file layer is untouched).
    pub fn set_tunables(&self, tunables: Tunables) {
        self.tx
            .send_modify(|s| Arc::make_mut(s).tunables = tunables);
    }

    /// Sets (or clears) the remote layer (the cluster's config from etcd) and re-resolves.
    pub fn set_remote(&self, remote: Option<SettingsPatch>) -> Result<(), ConfigError> {
        let mut layers = self.lock();
        let previous = layers.remote.replace(remote.unwrap_or_default());
        match self.apply(&layers) {
            Ok(()) => Ok(()),
            Err(e) => {
                layers.remote = previous;
                Err(e)
            }
        }
    }

    /// Re-reads the file and secret and publishes the result when valid.
    pub fn reload(&self) -> Result<(), ConfigError> {
        let layers = self.lock();
        self.apply(&layers)
    }

    /// Reloads if the settings file or the secret file changed since the last look; returns
    /// whether anything was reloaded. Errors keep the last good settings.
    pub fn reload_if_changed(&self) -> Result<bool, ConfigError> {
        let mut layers = self.lock();
        let now = (
            layers.file.as_deref().and_then(stamp),
            layers
                .secret_path(&self.current())
                .as_deref()
                .and_then(stamp),
        );
        if now == layers.stamps {
            return Ok(false);
        }
        // Remember the new stamps even on error, so a broken file is reported once, not
        // every second; the next edit triggers another attempt.
        layers.stamps = now;
        self.apply(&layers)?;
        Ok(true)
    }

    fn apply(&self, layers: &Layers) -> Result<(), ConfigError> {
        let next = layers.resolve()?;
        let current = self.current();
        let (merged, ignored) = current.reloaded(&next);
        if !ignored.is_empty() {
            tracing::warn!(
                ?ignored,
                "changed settings need a restart; keeping startup values"
            );
        }
        if merged != *current {
            tracing::info!(tunables = ?merged.tunables, "settings reloaded");
            self.tx.send_replace(Arc::new(merged));
        }
        Ok(())
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Layers> {
        self.layers.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Polls the files every `every` until `shutdown` resolves, reloading on change; errors
    /// are logged and counted in `metrics`.
    pub async fn watch_files(
        self,
        every: Duration,
        metrics: Metrics,
        shutdown: impl std::future::Future<Output = ()>,
    ) {
        tokio::pin!(shutdown);
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = &mut shutdown => return,
                _ = tick.tick() => {}
            }
            // File I/O is tiny; keep it off the async workers anyway.
            let handle = self.clone();
            let result = tokio::task::spawn_blocking(move || handle.reload_if_changed()).await;
            match result {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    metrics.config_reload_errors.inc();
                    tracing::error!(error = %e, "settings reload failed; keeping the last good settings");
                }
                Err(e) => tracing::error!(error = %e, "settings reload task failed"),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args() -> SettingsPatch {
        SettingsPatch {
            jwt_secret: Some("s3cret".into()),
            ..Default::default()
        }
    }

    #[test]
    fn durations_parse_with_units() {
        assert_eq!(
            "250ms".parse::<Dur>().unwrap().0,
            Duration::from_millis(250)
        );
        assert_eq!("30s".parse::<Dur>().unwrap().0, Duration::from_secs(30));
        assert_eq!("5m".parse::<Dur>().unwrap().0, Duration::from_secs(300));
        assert_eq!("1h".parse::<Dur>().unwrap().0, Duration::from_secs(3600));
        assert!("30".parse::<Dur>().is_err());
        assert!("s".parse::<Dur>().is_err());
        assert!("3d".parse::<Dur>().is_err());
        assert!("99999999999999999999h".parse::<Dur>().is_err());
        assert_eq!(Dur(Duration::from_millis(1500)).to_string(), "1500ms");
        assert_eq!(Dur(Duration::from_secs(2)).to_string(), "2s");
    }

    #[test]
    fn defaults_resolve() {
        let s = Settings::resolve(&SettingsPatch {
            node_name: Some("n1".into()),
            ..args()
        })
        .unwrap();
        assert_eq!(s.listen.port(), 7000);
        assert_eq!(s.admin_listen.port(), 9100);
        assert_eq!(s.shard_count, 16);
        assert_eq!(s.advertise_url, "ws://n1:7000/ws");
        assert_eq!(s.tunables, Tunables::default());
    }

    #[test]
    fn file_then_flags_precedence() {
        let file = SettingsPatch::from_toml(
            r#"
            shard_count = 8
            heartbeat_interval = "10s"
            idle_timeout = "1m"
            listen = "127.0.0.1:7100"
            "#,
        )
        .unwrap();
        let mut patch = file;
        patch.merge(&SettingsPatch {
            shard_count: Some(4),
            ..args()
        });
        let s = Settings::resolve(&patch).unwrap();
        assert_eq!(s.shard_count, 4);
        assert_eq!(s.tunables.heartbeat_interval, Duration::from_secs(10));
        assert_eq!(s.advertise_url, "ws://127.0.0.1:7100/ws");
    }

    #[test]
    fn bad_files_are_rejected() {
        assert!(matches!(
            SettingsPatch::from_toml("no_such_key = 1"),
            Err(ConfigError::Parse(_))
        ));
        assert!(matches!(
            SettingsPatch::from_toml("idle_timeout = 300"),
            Err(ConfigError::Parse(_))
        ));
        let patch = SettingsPatch {
            heartbeat_interval: Some(Dur(Duration::from_secs(60))),
            idle_timeout: Some(Dur(Duration::from_secs(30))),
            ..args()
        };
        assert!(matches!(
            Settings::resolve(&patch),
            Err(ConfigError::Invalid {
                field: "idle_timeout",
                ..
            })
        ));
        assert!(matches!(
            Settings::resolve(&SettingsPatch::default()),
            Err(ConfigError::MissingSecret)
        ));
    }

    #[test]
    fn reload_keeps_static_settings() {
        let a = Settings::resolve(&args()).unwrap();
        let b = Settings::resolve(&SettingsPatch {
            shard_count: Some(3),
            max_room_members: Some(4),
            ..args()
        })
        .unwrap();
        let (merged, ignored) = a.reloaded(&b);
        assert_eq!(merged.shard_count, 16);
        assert_eq!(merged.tunables.max_room_members, 4);
        assert_eq!(ignored, vec!["shard_count"]);
    }

    #[test]
    fn handle_reloads_changed_file_and_keeps_last_good() {
        let dir = std::env::temp_dir().join(format!("sb-config-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("node.toml");
        std::fs::write(&path, "max_room_members = 4\n").unwrap();
        let handle = ConfigHandle::load(args(), Some(path.clone())).unwrap();
        assert_eq!(handle.current().tunables.max_room_members, 4);
        let mut rx = handle.subscribe();
        assert!(!handle.reload_if_changed().unwrap());

        std::fs::write(&path, "max_room_members = 6\nrate_limit = 7\n").unwrap();
        assert!(handle.reload_if_changed().unwrap());
        assert!(rx.has_changed().unwrap());
        assert_eq!(rx.borrow_and_update().tunables.max_room_members, 6);

        std::fs::write(&path, "max_room_members = \"many\"\n").unwrap();
        assert!(handle.reload_if_changed().is_err());
        assert_eq!(handle.current().tunables.max_room_members, 6);

        // Flags win over the file.
        let pinned = ConfigHandle::load(
            SettingsPatch {
                rate_limit: Some(9),
                ..args()
            },
            Some(path.clone()),
        );
        assert!(pinned.is_err(), "the broken file is refused at startup too");
        std::fs::write(&path, "rate_limit = 7\n").unwrap();
        let pinned = ConfigHandle::load(
            SettingsPatch {
                rate_limit: Some(9),
                ..args()
            },
            Some(path),
        )
        .unwrap();
        assert_eq!(pinned.current().tunables.rate_limit, 9);
        std::fs::remove_dir_all(dir).ok();
    }

    #[test]
    fn remote_layer_sits_between_file_and_flags() {
        let handle = ConfigHandle::load(
            SettingsPatch {
                rate_burst: Some(5),
                ..args()
            },
            None,
        )
        .unwrap();
        handle
            .set_remote(Some(SettingsPatch {
                rate_burst: Some(50),
                max_rooms: Some(10),
                ..Default::default()
            }))
            .unwrap();
        let s = handle.current();
        assert_eq!((s.tunables.rate_burst, s.tunables.max_rooms), (5, 10));
        assert!(
            handle
                .set_remote(Some(SettingsPatch {
                    max_rooms: Some(0),
                    ..Default::default()
                }))
                .is_err()
        );
        assert_eq!(handle.current().tunables.max_rooms, 10);
    }
}
