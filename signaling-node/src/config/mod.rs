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
//!
//! Files: `patch` (one settings layer: file schema, flags, env, the operator's keys),
//! `reload` (the live settings and their hot reload), this file (resolved settings and
//! their validation).

mod patch;
mod reload;

pub use patch::{Dur, LogFormat, ServeArgs, SettingsPatch};
pub use reload::ConfigHandle;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

use switchboard_protocol::ProtocolVersion;
use switchboard_protocol::auth::{
    AuthError, JwtSecret, KeyError, KeySet, MAX_KEYS_FILE_LEN, TokenRules, TokenVerifier,
};

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
}

impl Tunables {
    /// Overlays the tunables set in `patch`.
    pub fn apply(&mut self, patch: &SettingsPatch) {
        macro_rules! set {
            ($($field:ident),* $(,)?) => { $(if let Some(v) = patch.$field { self.$field = v; })* };
        }
        macro_rules! set_dur {
            ($($field:ident),* $(,)?) => { $(if let Some(v) = patch.$field { self.$field = v.0; })* };
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
        );
    }
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
    /// WebTransport (UDP) listen address, if the node serves WebTransport.
    pub webtransport_listen: Option<SocketAddr>,
    /// This node's name.
    pub node_name: String,
    /// URL clients are redirected to for this node's rooms.
    pub advertise_url: String,
    /// WebSocket paths accepted besides `/ws` and the advertised URL's path.
    pub extra_ws_paths: Vec<String>,
    /// Number of room shards.
    pub shard_count: u32,
    /// Where the JWT secret was read from (None: given literally or not at all).
    pub jwt_secret_file: Option<PathBuf>,
    /// Where the join-token keys were read from (`--jwt-keys-dir`).
    pub jwt_keys_dir: Option<PathBuf>,
    /// The join-token keys and rules (hot-reloaded from their files).
    pub tokens: TokenVerifier,
    /// TLS files, if the node serves wss://.
    pub tls: Option<TlsFiles>,
    /// Graceful drain deadline.
    pub drain_timeout: Duration,
    /// Log format.
    pub log_format: LogFormat,
    /// Protocol versions served, newest first.
    pub protocols: Vec<ProtocolVersion>,
    /// Rollout version (pool) name.
    pub pool_version: String,
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
    #[error("no JWT secret: pass --jwt-secret-file, --jwt-keys-dir or SWITCHBOARD_JWT_SECRET")]
    MissingSecret,
    /// The join-token keys cannot be used.
    #[error("join-token keys in {path}: {source}")]
    Keys {
        /// The file or directory.
        path: PathBuf,
        /// What is wrong.
        source: KeyError,
    },
}

impl ConfigError {
    /// A low-cardinality label for metrics.
    pub fn metric_label(&self) -> &'static str {
        match self {
            ConfigError::Read { .. } => "read",
            ConfigError::Parse(_) => "parse",
            ConfigError::Invalid { .. } => "invalid",
            ConfigError::Secret(_) | ConfigError::MissingSecret | ConfigError::Keys { .. } => {
                "secret"
            }
        }
    }
}

fn invalid(field: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        field,
        reason: reason.into(),
    }
}

/// Parses a protocol list: `v1,v2`, `1,2` or `switchboard.v1, switchboard.v2`; newest first.
pub fn parse_protocols(list: &str) -> Result<Vec<ProtocolVersion>, ConfigError> {
    let mut out = Vec::new();
    for item in list.split(',').map(str::trim).filter(|i| !i.is_empty()) {
        let number = item.strip_prefix("switchboard.").unwrap_or(item);
        let number = number.strip_prefix('v').unwrap_or(number);
        let version = number
            .parse::<u8>()
            .ok()
            .and_then(ProtocolVersion::from_u8)
            .ok_or_else(|| invalid("protocols", format!("unknown protocol version {item:?}")))?;
        if !out.contains(&version) {
            out.push(version);
        }
    }
    if out.is_empty() {
        return Err(invalid("protocols", "name at least one protocol version"));
    }
    out.sort_unstable_by(|a, b| b.cmp(a));
    Ok(out)
}

/// Parses a comma-separated list of WebSocket paths; each must start with `/`.
pub fn parse_ws_paths(list: &str) -> Result<Vec<String>, ConfigError> {
    let mut out: Vec<String> = Vec::new();
    for path in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        if !path.starts_with('/') || path.contains(['?', '#', ' ']) {
            return Err(invalid(
                "ws_paths",
                format!("{path:?} is not a URL path (it must start with / and carry no query)"),
            ));
        }
        if !out.iter().any(|p| p == path) {
            out.push(path.to_owned());
        }
    }
    Ok(out)
}

/// Name of the single kid-less key in a `--jwt-keys-dir`.
pub const KEYS_DIR_SECRET: &str = "secret";
/// Name of the JWK set in a `--jwt-keys-dir`.
pub const KEYS_DIR_JWKS: &str = "keys.json";
/// Default clock-skew leeway of join tokens.
pub const DEFAULT_JWT_LEEWAY: Duration = Duration::from_secs(30);

/// The files whose changes reload the keys, each once (a `--jwt-secret-file` may be the keys
/// directory's own `secret`).
pub(crate) fn key_files(secret_file: Option<&PathBuf>, keys_dir: Option<&PathBuf>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = secret_file.cloned().into_iter().collect();
    if let Some(dir) = keys_dir {
        for file in [dir.join(KEYS_DIR_SECRET), dir.join(KEYS_DIR_JWKS)] {
            if !files.contains(&file) {
                files.push(file);
            }
        }
    }
    files
}

fn read_file(path: &std::path::Path) -> Result<Vec<u8>, ConfigError> {
    // A key file larger than a key set may be is refused without reading it all.
    let len = std::fs::metadata(path)
        .map(|m| m.len())
        .map_err(|source| ConfigError::Read {
            path: path.to_path_buf(),
            source,
        })?;
    if len > MAX_KEYS_FILE_LEN as u64 {
        return Err(ConfigError::Keys {
            path: path.to_path_buf(),
            source: KeyError::TooLarge {
                len: usize::try_from(len).unwrap_or(usize::MAX),
            },
        });
    }
    std::fs::read(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })
}

fn read_optional(path: &std::path::Path) -> Result<Option<Vec<u8>>, ConfigError> {
    if std::fs::exists(path).unwrap_or(false) {
        read_file(path).map(Some)
    } else {
        Ok(None)
    }
}

/// The keys `patch` names: `--jwt-secret`, `--jwt-secret-file` and/or `--jwt-keys-dir`.
fn read_keys(patch: &SettingsPatch) -> Result<KeySet, ConfigError> {
    let mut single = match (&patch.jwt_secret, &patch.jwt_secret_file) {
        (Some(literal), _) => Some(JwtSecret::new(literal.as_bytes().to_vec())?),
        // Beside a keys dir the file may be absent: the operator names it for node images that
        // predate the keys dir, and a Secret holding only `keys.json` has no such file.
        (None, Some(path)) if patch.jwt_keys_dir.is_some() => read_optional(path)?
            .map(|bytes| JwtSecret::from_file_contents(&bytes))
            .transpose()?,
        (None, Some(path)) => Some(JwtSecret::from_file_contents(&read_file(path)?)?),
        (None, None) => None,
    };
    let mut jwks = None;
    if let Some(dir) = &patch.jwt_keys_dir {
        if single.is_none()
            && let Some(bytes) = read_optional(&dir.join(KEYS_DIR_SECRET))?
        {
            single = Some(JwtSecret::from_file_contents(&bytes)?);
        }
        jwks = read_optional(&dir.join(KEYS_DIR_JWKS))?;
    }
    if single.is_none() && jwks.is_none() {
        return Err(match &patch.jwt_keys_dir {
            Some(dir) => ConfigError::Keys {
                path: dir.clone(),
                source: KeyError::Empty,
            },
            None => ConfigError::MissingSecret,
        });
    }
    KeySet::new(single, jwks.as_deref()).map_err(|source| ConfigError::Keys {
        path: patch
            .jwt_keys_dir
            .as_ref()
            .map_or_else(PathBuf::new, |d| d.join(KEYS_DIR_JWKS)),
        source,
    })
}

fn token_rules(patch: &SettingsPatch) -> TokenRules {
    let nonempty = |v: &Option<String>| v.clone().filter(|s| !s.trim().is_empty());
    TokenRules {
        leeway_secs: patch
            .jwt_leeway
            .map_or(DEFAULT_JWT_LEEWAY, |d| d.0)
            .as_secs(),
        audience: nonempty(&patch.jwt_audience),
        issuer: nonempty(&patch.jwt_issuer),
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
        Self::with_tokens(TokenVerifier::single(jwt_secret))
    }

    /// Default settings verifying tokens with `tokens`.
    pub fn with_tokens(tokens: TokenVerifier) -> Self {
        Self {
            listen: SocketAddr::from(([0, 0, 0, 0], 7000)),
            admin_listen: SocketAddr::from(([0, 0, 0, 0], 9100)),
            webtransport_listen: None,
            node_name: "signaling-node".to_owned(),
            advertise_url: "ws://127.0.0.1:7000/ws".to_owned(),
            extra_ws_paths: Vec::new(),
            shard_count: 16,
            jwt_secret_file: None,
            jwt_keys_dir: None,
            tokens,
            tls: None,
            drain_timeout: Duration::from_secs(10),
            log_format: LogFormat::Text,
            protocols: vec![ProtocolVersion::V2, ProtocolVersion::V1],
            pool_version: "default".to_owned(),
            tunables: Tunables::default(),
        }
    }

    /// Folds `patch` over the defaults, reads the key files and validates.
    pub fn resolve(patch: &SettingsPatch) -> Result<Self, ConfigError> {
        let mut s =
            Settings::with_tokens(TokenVerifier::new(read_keys(patch)?, token_rules(patch)));
        s.jwt_secret_file = patch.jwt_secret_file.clone();
        s.jwt_keys_dir = patch.jwt_keys_dir.clone();
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
        s.webtransport_listen = patch.webtransport_listen;
        if s.webtransport_listen.is_some() {
            if !cfg!(feature = "webtransport") {
                return Err(invalid(
                    "webtransport_listen",
                    "this build has no WebTransport (cargo feature `webtransport`)",
                ));
            }
            if s.tls.is_none() {
                // QUIC is always TLS: WebTransport uses the certificate of wss.
                return Err(invalid(
                    "webtransport_listen",
                    "WebTransport needs tls_cert and tls_key",
                ));
            }
        }
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
        if let Some(list) = &patch.ws_paths {
            s.extra_ws_paths = parse_ws_paths(list)?;
        }
        if let Some(v) = patch.drain_timeout {
            s.drain_timeout = v.0;
        } else if let Some(secs) = patch.drain_timeout_seconds {
            s.drain_timeout = Duration::from_secs(secs);
        }
        if let Some(list) = &patch.protocols {
            s.protocols = parse_protocols(list)?;
        }
        if let Some(v) = &patch.pool_version {
            s.pool_version = v.clone();
        }
        if let Some(v) = patch.log_format {
            s.log_format = v;
        }
        s.tunables.apply(patch);
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

    /// `self` with the hot-reloadable parts (tunables, join-token keys and rules) taken from
    /// `next`; returns the names of static settings that differ (they need a restart).
    pub fn reloaded(&self, next: &Settings) -> (Settings, Vec<&'static str>) {
        let mut ignored = Vec::new();
        if self.listen != next.listen {
            ignored.push("listen");
        }
        if self.admin_listen != next.admin_listen {
            ignored.push("admin_listen");
        }
        if self.webtransport_listen != next.webtransport_listen {
            ignored.push("webtransport_listen");
        }
        if self.node_name != next.node_name {
            ignored.push("node_name");
        }
        if self.advertise_url != next.advertise_url {
            ignored.push("advertise_url");
        }
        if self.extra_ws_paths != next.extra_ws_paths {
            ignored.push("ws_paths");
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
        if self.protocols != next.protocols {
            ignored.push("protocols");
        }
        if self.pool_version != next.pool_version {
            ignored.push("pool_version");
        }
        if self.jwt_secret_file != next.jwt_secret_file {
            ignored.push("jwt_secret_file");
        }
        if self.jwt_keys_dir != next.jwt_keys_dir {
            ignored.push("jwt_keys_dir");
        }
        let mut merged = self.clone();
        merged.tunables = next.tunables.clone();
        merged.tokens = next.tokens.clone();
        merged.drain_timeout = next.drain_timeout;
        (merged, ignored)
    }
}

/// A receiver of the live settings; `borrow()` is cheap and never blocks writers for long.
pub type SettingsWatch = watch::Receiver<Arc<Settings>>;

#[cfg(test)]
mod tests;
