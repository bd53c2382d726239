//! A co-host pair for scenarios whose clients live outside the cluster. Run in the outside
//! network namespace (`RealCluster::outside`), it connects alice and bob to the entry URL (the
//! node behind it redirects them to the room's owner), brings a call between them to Connected
//! and then reports, one JSON object per line on stdout with a wall-clock time (`at_ms`, Unix
//! milliseconds), every Welcome its clients get: reconnects, resumes after a failover, moves
//! after a Migrate. On `hangup` (a line on stdin) alice ends the call; once both saw it end it
//! reports what the clients saw (event gaps, lost sessions, errors) and exits: 0 when clean.
//!
//! ```text
//! outside-client --url wss://signal.switchboard.test:30443/ws --room studio-o \
//!     --jwt-secret-file secret --ca-file ca.pem
//! {"event":"connected","user":"alice","node":"demo-default-1","url":"wss://…:31234/ws",…}
//! {"event":"call","call_id":"…","at_ms":…}
//! {"event":"welcome","user":"alice","node":"demo-default-2","resumed":true,…}
//! ```

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use clap::Parser;
use serde_json::{Value, json};
use switchboard_client::fake::{self, SdpKind};
use switchboard_client::{Client, ConnectOptions};
use switchboard_protocol::auth::{Claims, JwtSecret, RoomGrant, mint, unix_now};
use switchboard_protocol::{EventKind, Message};
use tokio::io::{AsyncBufReadExt, BufReader};

/// How long one protocol step may take.
const STEP: Duration = Duration::from_secs(30);

#[derive(Debug, Parser)]
#[command(about = "A co-host pair for outside-client scenarios (JSON lines on stdout)")]
struct Args {
    /// The entry URL.
    #[arg(long)]
    url: String,
    /// The room.
    #[arg(long)]
    room: String,
    /// The join-token key.
    #[arg(long)]
    jwt_secret_file: PathBuf,
    /// PEM CA certificates for wss:// URLs.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

fn now_ms() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis())
}

fn emit(mut line: Value) {
    line["at_ms"] = json!(now_ms());
    println!("{line}");
}

/// One user's connection and what it saw.
struct Side {
    user: String,
    client: Client,
    /// Last event seq of the room.
    seq: u64,
    problems: Vec<String>,
}

impl Side {
    async fn connect(args: &Args, key: &JwtSecret, user: &str) -> anyhow::Result<Self> {
        let claims = Claims::new(
            user,
            RoomGrant::Rooms(vec![args.room.clone()]),
            unix_now(),
            3600,
        );
        let mut options = ConnectOptions::new(mint(key, &claims));
        // Patient reconnects: a failover takes seconds.
        options.reconnect.max_attempts = 60;
        options.reconnect.initial_backoff = Duration::from_millis(100);
        options.reconnect.max_backoff = Duration::from_millis(500);
        options.max_redirects = 5;
        options.timeouts.connect = Duration::from_secs(3);
        options.timeouts.handshake = Duration::from_secs(3);
        options.ca_file = args.ca_file.clone();
        let client = Client::connect(&args.url, options)
            .await
            .with_context(|| format!("{user} connecting to {}", args.url))?;
        let joined = client
            .join(&args.room)
            .await
            .with_context(|| format!("{user} joining {}", args.room))?;
        let info = client.session();
        emit(json!({
            "event": "connected", "user": user, "node": info.node, "url": info.url,
            "session": info.session, "members": joined.members,
        }));
        Ok(Self {
            user: user.to_string(),
            client,
            seq: joined.last_seq,
            problems: Vec::new(),
        })
    }

    fn observe(&mut self, msg: &Message) {
        match msg {
            Message::Event(event) => {
                if event.seq != self.seq + 1 {
                    self.problems.push(format!(
                        "{}: expected event seq {}, got {} ({:?})",
                        self.user,
                        self.seq + 1,
                        event.seq,
                        event.kind
                    ));
                }
                self.seq = self.seq.max(event.seq);
            }
            // A Joined nobody asked for: the library re-joined because the session was lost.
            Message::Joined(joined) => {
                self.problems.push(format!(
                    "{}: re-joined {} at seq {} (session not resumed)",
                    self.user, joined.room, joined.last_seq
                ));
                self.seq = joined.last_seq;
            }
            Message::Welcome(welcome) => {
                let info = self.client.session();
                emit(json!({
                    "event": "welcome", "user": self.user, "node": welcome.node,
                    "url": info.url, "session": welcome.session, "resumed": welcome.resumed,
                    "reconnects": info.reconnects,
                }));
            }
            Message::Error(error) => self.problems.push(format!(
                "{}: error {} {}",
                self.user, error.code, error.message
            )),
            _ => {}
        }
    }

    async fn next(&mut self, timeout: Duration) -> anyhow::Result<Message> {
        let msg = tokio::time::timeout(timeout, self.client.recv())
            .await
            .with_context(|| format!("{}: nothing received for {timeout:?}", self.user))?
            .with_context(|| format!("{}: client stopped", self.user))?;
        self.observe(&msg);
        Ok(msg)
    }

    async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Message) -> Option<T>,
    ) -> anyhow::Result<T> {
        let deadline = tokio::time::Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                bail!("{}: no {what} within {STEP:?}", self.user);
            }
            let msg = self
                .next(left)
                .await
                .with_context(|| format!("waiting for {what}"))?;
            if let Some(v) = pick(&msg) {
                return Ok(v);
            }
        }
    }

    async fn call_state(&mut self, call: &str, state: &str) -> anyhow::Result<()> {
        self.wait_for(&format!("call {state}"), |m| match m {
            Message::Event(e)
                if e.kind == EventKind::CallState
                    && e.call_id == call
                    && e.state.eq_ignore_ascii_case(state) =>
            {
                Some(())
            }
            _ => None,
        })
        .await
    }
}

/// Invite, accept, offer, answer and ICE until both sides see the call Connected.
async fn connect_call(host: &mut Side, guest: &mut Side, room: &str) -> anyhow::Result<String> {
    let call = host.client.invite(room, &guest.user).await?;
    guest
        .wait_for("Invite", |m| match m {
            Message::Invite(i) if i.call_id == call => Some(()),
            _ => None,
        })
        .await?;
    guest.client.accept(&call).await?;
    host.wait_for("InviteResult", |m| match m {
        Message::InviteResult(r) if r.call_id == call && r.accepted => Some(()),
        _ => None,
    })
    .await?;
    host.client
        .offer(&call, &fake::sdp(SdpKind::Offer, 1))
        .await?;
    guest
        .wait_for("Offer", |m| {
            matches!(m, Message::Offer(o) if o.call_id == call).then_some(())
        })
        .await?;
    guest
        .client
        .answer(&call, &fake::sdp(SdpKind::Answer, 2))
        .await?;
    host.wait_for("Answer", |m| {
        matches!(m, Message::Answer(a) if a.call_id == call).then_some(())
    })
    .await?;
    for side in [&*host, &*guest] {
        for n in 0..2 {
            side.client.ice(&call, fake::candidate(n, 3)).await?;
        }
        side.client.end_of_candidates(&call).await?;
    }
    host.call_state(&call, "connected").await?;
    guest.call_state(&call, "connected").await?;
    Ok(call)
}

async fn run(args: Args) -> anyhow::Result<Vec<String>> {
    let bytes = std::fs::read(&args.jwt_secret_file)
        .with_context(|| format!("reading {}", args.jwt_secret_file.display()))?;
    let key = JwtSecret::from_file_contents(&bytes).context("the join-token key")?;
    let mut bob = Side::connect(&args, &key, "bob").await?;
    let mut alice = Side::connect(&args, &key, "alice").await?;
    let call = connect_call(&mut alice, &mut bob, &args.room).await?;
    emit(json!({"event": "call", "call_id": call}));

    let mut stdin = BufReader::new(tokio::io::stdin()).lines();
    loop {
        tokio::select! {
            msg = alice.client.recv() => alice.observe(&msg.context("alice: client stopped")?),
            msg = bob.client.recv() => bob.observe(&msg.context("bob: client stopped")?),
            line = stdin.next_line() => match line?.as_deref().map(str::trim) {
                Some("hangup") | None => break,
                Some(other) => bail!("unknown command {other:?} (only `hangup`)"),
            },
        }
    }
    alice.client.hangup(&call, "done").await?;
    alice.call_state(&call, "ended").await?;
    bob.call_state(&call, "ended").await?;
    let mut problems: Vec<String> = alice.problems;
    problems.extend(bob.problems);
    let sessions: BTreeMap<String, String> = [
        ("alice".to_string(), alice.client.session().session),
        ("bob".to_string(), bob.client.session().session),
    ]
    .into();
    emit(json!({"event": "ended", "problems": problems, "sessions": sessions}));
    alice.client.close().await;
    bob.client.close().await;
    Ok(problems)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    match run(args).await {
        Ok(problems) if problems.is_empty() => Ok(()),
        Ok(problems) => bail!("the clients saw problems: {problems:?}"),
        Err(error) => {
            emit(json!({"event": "failed", "error": format!("{error:#}")}));
            Err(error)
        }
    }
}
