//! Co-host clients for the scenarios, built on the client library (`switchboard_client`):
//! a [`Member`] records everything it receives and checks, per room, that event sequence
//! numbers arrive without gaps and that its session is never silently replaced by a fresh one.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use switchboard_client::fake::{self, SdpKind};
use switchboard_client::{Client, ConnectOptions};
use switchboard_e2e::call_events::call_state_event;
use switchboard_protocol::{Joined, Message, Welcome};

/// How long one protocol step may take.
pub const STEP: Duration = Duration::from_secs(15);

/// One user's connection and what it saw.
pub struct Member {
    /// The user id.
    pub user: String,
    /// The library client.
    pub client: Client,
    /// The URL the application connected to (any node).
    pub entry: String,
    /// The session id of the first Welcome.
    pub session: String,
    /// Last event seq per joined room.
    pub seqs: BTreeMap<String, u64>,
    /// Every gap in event seqs (`room: expected N, got M`).
    pub gaps: Vec<String>,
    /// Every Welcome after the first (reconnects, migrations, resumes), with its arrival time.
    pub welcomes: Vec<(Instant, Welcome)>,
    /// Error frames received.
    pub errors: Vec<String>,
}

/// Client options for the scenarios: patient reconnects (a failover takes seconds), and an
/// optional silence bound (to notice a frozen node quickly).
pub fn options(token: String, silence: Option<Duration>) -> ConnectOptions {
    let mut options = ConnectOptions::new(token);
    options.reconnect.max_attempts = 60;
    options.reconnect.initial_backoff = Duration::from_millis(100);
    options.reconnect.max_backoff = Duration::from_millis(500);
    options.max_redirects = 5;
    options.timeouts.connect = Duration::from_secs(2);
    options.timeouts.handshake = Duration::from_secs(2);
    options.timeouts.silence = silence;
    options
}

impl Member {
    /// Connects `user` to `url` (following the node's Redirect to the room's owner).
    pub async fn connect(url: &str, user: &str, token: String, silence: Option<Duration>) -> Self {
        Self::connect_with(url, user, options(token, silence)).await
    }

    /// [`Member::connect`] with the client's options given.
    pub async fn connect_with(url: &str, user: &str, options: ConnectOptions) -> Self {
        let client = Client::connect(url, options)
            .await
            .unwrap_or_else(|e| panic!("{user} connecting to {url}: {e}"));
        let session = client.session().session;
        Self {
            user: user.to_string(),
            client,
            entry: url.to_string(),
            session,
            seqs: BTreeMap::new(),
            gaps: Vec::new(),
            welcomes: Vec::new(),
            errors: Vec::new(),
        }
    }

    /// Joins `room` and starts tracking its event seqs.
    pub async fn join(&mut self, room: &str) -> Joined {
        let joined = self
            .client
            .join(room)
            .await
            .unwrap_or_else(|e| panic!("{} joining {room}: {e}", self.user));
        self.seqs.insert(room.to_string(), joined.last_seq);
        joined
    }

    fn observe(&mut self, msg: &Message) {
        match msg {
            Message::Event(event) => {
                if let Some(last) = self.seqs.get_mut(&event.room) {
                    if event.seq != *last + 1 {
                        self.gaps.push(format!(
                            "{}: room {} expected seq {}, got {} ({:?})",
                            self.user,
                            event.room,
                            *last + 1,
                            event.seq,
                            event.kind
                        ));
                    }
                    *last = (*last).max(event.seq);
                }
            }
            Message::Joined(joined) => {
                // A Joined we did not ask for: the library re-joined after the node forgot our
                // session — the session was lost.
                self.gaps.push(format!(
                    "{}: re-joined room {} at seq {} (session not resumed)",
                    self.user, joined.room, joined.last_seq
                ));
                self.seqs.insert(joined.room.clone(), joined.last_seq);
            }
            Message::Welcome(welcome) => {
                self.welcomes.push((Instant::now(), welcome.clone()));
            }
            Message::Error(error) => {
                self.errors.push(format!(
                    "{}: error {} {}",
                    self.user, error.code, error.message
                ));
            }
            _ => {}
        }
    }

    /// The next message within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Message, String> {
        match tokio::time::timeout(timeout, self.client.recv()).await {
            Err(_) => Err(format!("{}: nothing received for {timeout:?}", self.user)),
            Ok(Err(e)) => Err(format!("{}: client stopped: {e}", self.user)),
            Ok(Ok(msg)) => {
                self.observe(&msg);
                Ok(msg)
            }
        }
    }

    /// Reads until `pick` matches (within `timeout` overall).
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut pick: impl FnMut(&Message) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{}: no {what} within {timeout:?}", self.user));
            }
            let msg = self
                .next(left)
                .await
                .map_err(|e| format!("waiting for {what}: {e}"))?;
            if let Some(v) = pick(&msg) {
                return Ok(v);
            }
        }
    }

    /// Waits for the call-state event `state` of `call`.
    pub async fn call_state(&mut self, call: &str, state: &str) -> Result<u64, String> {
        self.wait_for(&format!("call {call} {state}"), STEP, |m| {
            call_state_event(m, call, state).map(|e| e.seq)
        })
        .await
    }

    /// Drains what is already queued (up to `quiet` of silence).
    pub async fn drain(&mut self, quiet: Duration) {
        while self.next(quiet).await.is_ok() {}
    }

    /// Gaps, lost sessions and errors seen so far, as one report (empty when clean).
    pub fn problems(&self) -> Vec<String> {
        self.gaps
            .iter()
            .chain(self.errors.iter())
            .cloned()
            .collect()
    }
}

/// Plays the co-host flow in `room` until both sides see the call Connected; returns the
/// call id.
pub async fn connected_call(
    host: &mut Member,
    guest: &mut Member,
    room: &str,
) -> Result<String, String> {
    let call = host
        .client
        .invite(room, &guest.user)
        .await
        .map_err(|e| format!("invite: {e}"))?;
    let guest_call = guest
        .wait_for("Invite", STEP, |m| match m {
            Message::Invite(i) if i.call_id == call => Some(i.call_id.clone()),
            _ => None,
        })
        .await?;
    guest
        .client
        .accept(&guest_call)
        .await
        .map_err(|e| format!("accept: {e}"))?;
    host.wait_for("InviteResult accepted", STEP, |m| match m {
        Message::InviteResult(r) if r.call_id == call && r.accepted => Some(()),
        _ => None,
    })
    .await?;
    host.client
        .offer(&call, &fake::sdp(SdpKind::Offer, 1))
        .await
        .map_err(|e| format!("offer: {e}"))?;
    guest
        .wait_for("Offer", STEP, |m| match m {
            Message::Offer(o) if o.call_id == call => Some(()),
            _ => None,
        })
        .await?;
    guest
        .client
        .answer(&call, &fake::sdp(SdpKind::Answer, 2))
        .await
        .map_err(|e| format!("answer: {e}"))?;
    host.wait_for("Answer", STEP, |m| match m {
        Message::Answer(a) if a.call_id == call => Some(()),
        _ => None,
    })
    .await?;
    for side in [&*host, &*guest] {
        for n in 0..2 {
            side.client
                .ice(&call, fake::candidate(n, 3))
                .await
                .map_err(|e| format!("ice: {e}"))?;
        }
        side.client
            .end_of_candidates(&call)
            .await
            .map_err(|e| format!("end of candidates: {e}"))?;
    }
    host.call_state(&call, "connected").await?;
    guest.call_state(&call, "connected").await?;
    Ok(call)
}
