//! What the bench connects to ([`Target`]) and [`connect`], which opens one joined connection
//! to it with the adapter of its kind (`conn` for Switchboard and the baseline relay, `tcp`
//! for the raw TCP floor, `centrifugo` for Centrifugo).

use std::net::SocketAddr;

use switchboard_client::ConnectOptions;
use switchboard_protocol::auth::JwtSecret;

use super::centrifugo::{self, Codec};
use super::conn::{
    ConnectFailure, JoinTiming, Rx, Tx, baseline_connect, switchboard_connect, switchboard_owner,
};
use super::tcp::tcp_connect;

/// What the bench connects to.
#[derive(Debug, Clone)]
pub enum Target {
    /// A Switchboard node.
    Switchboard {
        /// `ws://host:port/ws`
        url: String,
        /// Secret to mint join tokens with.
        secret: JwtSecret,
        /// Client options (the token is filled per connection).
        options: Box<ConnectOptions>,
    },
    /// The baseline relay.
    Baseline {
        /// Its address.
        addr: SocketAddr,
    },
    /// The raw TCP floor: the baseline relay's rooms over length-prefixed TCP frames.
    Tcp {
        /// Its address.
        addr: SocketAddr,
    },
    /// A Centrifugo server, driven through its client protocol over WebSocket.
    Centrifugo {
        /// `ws://host:port/connection/websocket`
        url: String,
        /// Its `token_hmac_secret_key`, to mint connection tokens with.
        secret: JwtSecret,
        /// Protobuf or JSON.
        codec: Codec,
    },
}

impl Target {
    /// `switchboard`, `baseline`, `tcp`, `centrifugo` (Protobuf) or `centrifugo-json`.
    pub fn name(&self) -> &'static str {
        match self {
            Target::Switchboard { .. } => "switchboard",
            Target::Baseline { .. } => "baseline",
            Target::Tcp { .. } => "tcp",
            Target::Centrifugo {
                codec: Codec::Protobuf,
                ..
            } => "centrifugo",
            Target::Centrifugo {
                codec: Codec::Json, ..
            } => "centrifugo-json",
        }
    }

    /// Whether the target runs the call state machine (sends CallState events).
    pub fn has_events(&self) -> bool {
        matches!(self, Target::Switchboard { .. })
    }
}

/// Connects `user` to `room` on `target` and joins; a Switchboard client goes to `url` when
/// given (the room's owner) instead of the target's URL.
pub async fn connect(
    target: &Target,
    user: &str,
    room: &str,
    url: Option<&str>,
) -> Result<(Tx, Rx, JoinTiming), ConnectFailure> {
    match target {
        Target::Switchboard {
            url: entry,
            secret,
            options,
        } => switchboard_connect(url.unwrap_or(entry), secret, options, user, room).await,
        Target::Baseline { addr } => baseline_connect(*addr, user, room).await,
        Target::Tcp { addr } => tcp_connect(*addr, user, room).await,
        Target::Centrifugo { url, secret, codec } => {
            centrifugo::connect(url, *codec, secret, user, room).await
        }
    }
}

/// The URL of `room`'s owner as the node behind a Switchboard target's URL tells `user` (its
/// Hello is redirected there); other targets have no owners.
pub async fn owner_url(target: &Target, user: &str, room: &str) -> Result<String, ConnectFailure> {
    match target {
        Target::Switchboard {
            url,
            secret,
            options,
        } => switchboard_owner(url, secret, options, user, room).await,
        other => Err(ConnectFailure {
            kind: "owner_lookup".into(),
            detail: format!("{} has no room owners", other.name()),
        }),
    }
}
