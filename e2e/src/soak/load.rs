//! Client load for a soak run: pairs of co-hosts (one room each) built on the client library,
//! playing invite → accept → offer/answer → ICE → connected → hangup in a loop, while every
//! client-visible operation is recorded for the history checker.

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use switchboard_client::fake::{self, SdpKind};
use switchboard_client::{Client, ClientError, ClientSender, ConnectOptions, Incoming};
use switchboard_protocol::{EventKind, Message};
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;

use super::history::{Op, Record, SeenEvent};
use crate::call_events::call_state_event;

/// Records kept per run at most (a bounded history; beyond it records are counted, not kept).
pub const MAX_RECORDS: usize = 400_000;
/// How long one protocol step may take before the pair starts its next call.
pub const STEP: Duration = Duration::from_secs(15);
/// Shortest time from one call's start to the next: a host sends five frames per call, and
/// back-to-back calls on release-built nodes (about 40 ms each) went past the default limit of
/// 50 messages per second per connection, which the node rightly refused with 1007.
pub const CALL_PERIOD: Duration = Duration::from_millis(150);
/// After a reconnect, how long the replay may take to confirm a request sent before it.
pub const REPLAY_GRACE: Duration = Duration::from_millis(500);

/// Shared recorder: every client's operations plus per-room progress marks.
#[derive(Clone)]
pub struct Recorder {
    t0: Instant,
    inner: Arc<Mutex<Inner>>,
}

struct Inner {
    records: Vec<Record>,
    dropped: u64,
    /// Per room index: when a new committed transition (a call-state event with a seq above
    /// any seen before in that room) was last seen.
    progress: Vec<Option<Instant>>,
    /// Per room index: the highest event seq seen (a replay after a resume is not progress).
    max_seq: Vec<u64>,
}

impl Recorder {
    /// A recorder for `rooms` rooms, timing from now.
    pub fn new(rooms: usize) -> Self {
        Self {
            t0: Instant::now(),
            inner: Arc::new(Mutex::new(Inner {
                records: Vec::new(),
                dropped: 0,
                progress: vec![None; rooms],
                max_seq: vec![0; rooms],
            })),
        }
    }

    /// When the run started.
    pub fn t0(&self) -> Instant {
        self.t0
    }

    /// Milliseconds since the run started.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.t0.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    /// Records `op` by `client`.
    pub fn record(&self, client: &str, op: Op) {
        let at_ms = self.now_ms();
        if let Ok(mut inner) = self.inner.lock() {
            if inner.records.len() < MAX_RECORDS {
                inner.records.push(Record {
                    at_ms,
                    client: client.to_string(),
                    op,
                });
            } else {
                inner.dropped += 1;
            }
        }
    }

    /// Marks progress in room `index`.
    pub fn progress(&self, index: usize) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(slot) = inner.progress.get_mut(index)
        {
            *slot = Some(Instant::now());
        }
    }

    /// Marks progress in room `index` if `seq` is new there (replays do not count).
    pub fn progress_at(&self, index: usize, seq: u64) {
        if let Ok(mut inner) = self.inner.lock()
            && let Some(max) = inner.max_seq.get_mut(index)
            && seq > *max
        {
            *max = seq;
            if let Some(slot) = inner.progress.get_mut(index) {
                *slot = Some(Instant::now());
            }
        }
    }

    /// Rooms that made no progress since `since`.
    pub fn stalled_since(&self, since: Instant) -> BTreeSet<usize> {
        self.inner
            .lock()
            .map(|inner| {
                inner
                    .progress
                    .iter()
                    .enumerate()
                    .filter(|(_, at)| at.is_none_or(|at| at <= since))
                    .map(|(i, _)| i)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// Everything recorded, and how many records did not fit.
    pub fn take(&self) -> (Vec<Record>, u64) {
        self.inner
            .lock()
            .map(|mut inner| (std::mem::take(&mut inner.records), inner.dropped))
            .unwrap_or_default()
    }
}

/// Client options: patient reconnects (a failover takes seconds) and a short silence bound so
/// a frozen node is noticed.
pub fn options(token: String) -> ConnectOptions {
    let mut options = ConnectOptions::new(token);
    options.reconnect.max_attempts = 120;
    options.reconnect.initial_backoff = Duration::from_millis(100);
    options.reconnect.max_backoff = Duration::from_millis(1000);
    options.max_redirects = 5;
    options.timeouts.connect = Duration::from_secs(2);
    options.timeouts.handshake = Duration::from_secs(2);
    options.timeouts.silence = Some(Duration::from_secs(4));
    options
}

/// One user's connection, recording what it sees.
pub struct Member {
    /// User id.
    pub user: String,
    /// Room index (for progress marks).
    pub index: usize,
    client: ClientSender,
    /// Frames as the reader task passed them on (it records relays as they arrive).
    incoming: mpsc::Receiver<Result<Message, ClientError>>,
    reader: JoinHandle<()>,
    rec: Recorder,
    /// Set once the library gave up (recorded as an abnormal close).
    dead: bool,
    /// Per call, the highest seq of a `negotiating` call-state event seen: a higher one means
    /// the room restarted negotiation (a party resumed) and the inviter must offer again.
    negotiating: HashMap<String, u64>,
}

impl Member {
    /// Connects `user` of `room` through one of `urls` (tried in turn, a few rounds).
    pub async fn connect(
        urls: &[String],
        user: &str,
        room: &str,
        token: String,
        index: usize,
        rec: Recorder,
    ) -> Result<Self, String> {
        let mut last = String::new();
        for attempt in 0..(urls.len() * 4).max(1) {
            let url = &urls[attempt % urls.len().max(1)];
            match Client::connect(url, options(token.clone())).await {
                Ok(client) => {
                    let info = client.session();
                    rec.record(
                        user,
                        Op::Ack(format!(
                            "connected to {} session {}",
                            info.node, info.session
                        )),
                    );
                    let (client, incoming) = client.split();
                    let (tx, rx) = mpsc::channel(64);
                    let reader = tokio::spawn(read_frames(
                        incoming,
                        tx,
                        RelayStamp {
                            user: user.to_string(),
                            room: room.to_string(),
                            node: info.node,
                            rec: rec.clone(),
                        },
                    ));
                    return Ok(Self {
                        user: user.to_string(),
                        index,
                        client,
                        incoming: rx,
                        reader,
                        rec,
                        dead: false,
                        negotiating: HashMap::new(),
                    });
                }
                Err(e) => {
                    last = format!("{url}: {e}");
                    tokio::time::sleep(Duration::from_millis(300)).await;
                }
            }
        }
        Err(format!("{user} could not connect: {last}"))
    }

    fn observe(&mut self, msg: &Message) {
        match msg {
            Message::Event(e) => {
                if e.kind == EventKind::CallState {
                    self.rec.progress_at(self.index, e.seq);
                    if e.state.eq_ignore_ascii_case("negotiating") {
                        let seen = self.negotiating.entry(e.call_id.clone()).or_insert(0);
                        *seen = (*seen).max(e.seq);
                    }
                }
                self.rec.record(
                    &self.user,
                    Op::Event(SeenEvent {
                        room: e.room.clone(),
                        seq: e.seq,
                        kind: e.kind.name().to_string(),
                        user: e.user.clone(),
                        call_id: e.call_id.clone(),
                        state: e.state.clone(),
                    }),
                );
            }
            Message::Joined(j) => self.rec.record(
                &self.user,
                Op::Joined {
                    room: j.room.clone(),
                    last_seq: j.last_seq,
                },
            ),
            Message::Welcome(w) => self.rec.record(
                &self.user,
                Op::Reconnected {
                    resumed: w.resumed,
                    node: w.node.clone(),
                },
            ),
            Message::Error(e) => self.rec.record(
                &self.user,
                Op::Ack(format!("error {} {}", e.code, e.message)),
            ),
            _ => {}
        }
    }

    /// The next message within `timeout`.
    pub async fn next(&mut self, timeout: Duration) -> Result<Message, String> {
        if self.dead {
            return Err(format!("{}: client stopped", self.user));
        }
        let next = async {
            match self.incoming.recv().await {
                Some(item) => item,
                None => Err(ClientError::Closed),
            }
        };
        match tokio::time::timeout(timeout, next).await {
            Err(_) => Err(format!("{}: nothing for {timeout:?}", self.user)),
            Ok(Err(e)) => {
                self.dead = true;
                self.rec.record(
                    &self.user,
                    Op::Closed {
                        normal: false,
                        detail: e.to_string(),
                    },
                );
                Err(format!("{}: client stopped: {e}", self.user))
            }
            Ok(Ok(msg)) => {
                self.observe(&msg);
                Ok(msg)
            }
        }
    }

    /// Reads until `pick` matches, within [`STEP`].
    pub async fn wait_for<T>(
        &mut self,
        what: &str,
        mut pick: impl FnMut(&Message) -> Option<T>,
    ) -> Result<T, String> {
        let deadline = Instant::now() + STEP;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(format!("{}: no {what} within {STEP:?}", self.user));
            }
            let msg = self.next(left).await?;
            if let Some(v) = pick(&msg) {
                return Ok(v);
            }
        }
    }

    /// Waits for the call-state event `state` of `call` that confirms this member's own
    /// request (Invite, accept and hangup get no other answer). A request written just before
    /// the connection dropped may never have reached the room: when the replay after a
    /// reconnect ([`REPLAY_GRACE`] after the Welcome) does not carry the event either, or an
    /// Error frame arrives, the request is reported lost at once instead of after [`STEP`].
    async fn confirm(&mut self, what: &str, call: &str, state: &str) -> Result<(), String> {
        let deadline = Instant::now() + STEP;
        let mut reconnected: Option<Instant> = None;
        loop {
            let until = reconnected.map_or(deadline, |t| deadline.min(t + REPLAY_GRACE));
            let left = until.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Err(match reconnected {
                    Some(_) => format!("{}: {what} lost in a reconnect", self.user),
                    None => format!("{}: no confirmation of {what} within {STEP:?}", self.user),
                });
            }
            match self.next(left).await {
                Ok(msg) if call_state_event(&msg, call, state).is_some() => return Ok(()),
                Ok(Message::Welcome(_)) => reconnected = Some(Instant::now()),
                Ok(Message::Error(e)) => {
                    return Err(format!(
                        "{}: {what} refused: {} {}",
                        self.user, e.code, e.message
                    ));
                }
                Ok(_) => {}
                Err(e) if self.dead => return Err(e),
                Err(_) => {}
            }
        }
    }

    /// The seq of the latest `negotiating` event seen for `call` (0: none).
    fn negotiating_seq(&self, call: &str) -> u64 {
        self.negotiating.get(call).copied().unwrap_or(0)
    }

    /// Like [`Member::wait_for`], but gives up with `Ok(None)` as soon as a `negotiating`
    /// event for `call` above `since` shows that negotiation restarted.
    async fn wait_or_restart<T>(
        &mut self,
        what: &str,
        call: &str,
        since: u64,
        mut pick: impl FnMut(&Message) -> Option<T>,
    ) -> Result<Option<T>, String> {
        let call = call.to_string();
        self.wait_for(what, |msg| {
            if call_state_event(msg, &call, "negotiating").is_some_and(|e| e.seq > since) {
                return Some(None);
            }
            pick(msg).map(Some)
        })
        .await
    }

    /// Reads what is queued until `quiet` passes without a message.
    pub async fn drain(&mut self, quiet: Duration) {
        while self.next(quiet).await.is_ok() {}
    }

    /// Joins `room` (recorded by the Joined it returns).
    pub async fn join(&mut self, room: &str) -> Result<(), String> {
        self.rec
            .record(&self.user, Op::Send(format!("join {room}")));
        let joined = self
            .client
            .join(room)
            .await
            .map_err(|e| format!("{} join {room}: {e}", self.user))?;
        self.observe(&Message::Joined(joined));
        Ok(())
    }

    /// Runs a request, recording it and its outcome.
    async fn request<T, E: std::fmt::Display>(
        &self,
        what: String,
        fut: impl std::future::Future<Output = Result<T, E>>,
    ) -> Result<T, String> {
        self.rec.record(&self.user, Op::Send(what.clone()));
        match fut.await {
            Ok(v) => {
                self.rec.record(&self.user, Op::Ack(what));
                Ok(v)
            }
            Err(e) => {
                let msg = format!("{what}: {e}");
                self.rec
                    .record(&self.user, Op::Ack(format!("refused {msg}")));
                Err(msg)
            }
        }
    }

    /// Closes the session normally (recorded).
    pub async fn close(self) {
        if !self.dead {
            self.rec.record(
                &self.user,
                Op::Closed {
                    normal: true,
                    detail: "closed by the application".into(),
                },
            );
        }
        self.client.close().await;
        self.reader.abort();
    }
}

/// What the reader task needs to record a relayed frame as it arrives.
struct RelayStamp {
    user: String,
    room: String,
    /// The node serving the session: the first Welcome's, then each later Welcome's.
    node: String,
    rec: Recorder,
}

/// Passes frames on, recording each relayed call frame when it arrives with the node that
/// delivered it (a frame read later by the driver would be stamped too late for the
/// deposed-relay check). Frames arrive in order, so a Welcome marks where a new node's
/// frames begin.
async fn read_frames(
    mut incoming: Incoming,
    tx: mpsc::Sender<Result<Message, ClientError>>,
    mut stamp: RelayStamp,
) {
    loop {
        let item = incoming.recv().await;
        if let Ok(msg) = &item {
            if let Message::Welcome(w) = msg {
                stamp.node = w.node.clone();
            }
            if let Some((frame, call)) = relayed(msg) {
                stamp.rec.record(
                    &stamp.user,
                    Op::Relay {
                        room: stamp.room.clone(),
                        frame: frame.to_string(),
                        call: call.to_string(),
                        node: stamp.node.clone(),
                    },
                );
            }
        }
        let end = item.is_err();
        if tx.send(item).await.is_err() || end {
            return;
        }
    }
}

/// The frame type and call id of a relayed call frame.
fn relayed(msg: &Message) -> Option<(&'static str, &str)> {
    let call = match msg {
        Message::Invite(m) => &m.call_id,
        Message::InviteResult(m) => &m.call_id,
        Message::Offer(m) | Message::Answer(m) => &m.call_id,
        Message::IceCandidate(m) => &m.call_id,
        Message::IceBatch(m) => &m.call_id,
        Message::Hangup(m) => &m.call_id,
        _ => return None,
    };
    Some((msg.frame_type().name(), call))
}

async fn call_state(m: &mut Member, call: &str, state: &str) -> Result<(), String> {
    m.wait_for(&format!("call {call} {state}"), |msg| {
        call_state_event(msg, call, state).map(drop)
    })
    .await
}

/// Negotiation rounds a call may restart before the pair gives it up.
const MAX_ROUNDS: u32 = 4;

/// One whole call, from invite to both sides seeing it ended.
///
/// The driver follows the protocol's recovery rules (docs/protocol.md), as an application
/// would: the invitee accepts on the Invite frame or on the `ringing` event (a resume replays
/// the event and re-sends the Invite), the inviter offers on the InviteResult or on the
/// `negotiating` event, and a later `negotiating` event for the call (a party resumed, the
/// room reset the negotiation) starts the offer/answer/ICE round again.
async fn one_call(host: &mut Member, guest: &mut Member, room: &str, n: u64) -> Result<(), String> {
    let guest_user = guest.user.clone();
    let call = host
        .request(
            format!("invite {guest_user}"),
            host.client.invite(room, &guest_user),
        )
        .await?;
    host.confirm(&format!("invite {call}"), &call, "inviting")
        .await?;
    let result = async {
        guest
            .wait_for("Invite", |m| match m {
                Message::Invite(i) if i.call_id == call => Some(()),
                _ if call_state_event(m, &call, "ringing").is_some() => Some(()),
                _ => None,
            })
            .await?;
        guest
            .request(format!("accept {call}"), guest.client.accept(&call))
            .await?;
        guest
            .confirm(&format!("accept {call}"), &call, "negotiating")
            .await?;
        host.wait_for("InviteResult", |m| match m {
            Message::InviteResult(r) if r.call_id == call && r.accepted => Some(()),
            _ if call_state_event(m, &call, "negotiating").is_some() => Some(()),
            _ => None,
        })
        .await?;
        // The accept's own `negotiating` event is the base later restarts are judged against.
        if host.negotiating_seq(&call) == 0 {
            call_state(host, &call, "negotiating").await?;
        }
        for round in 1..=MAX_ROUNDS {
            if negotiate(host, guest, &call, n).await? {
                return Ok::<(), String>(());
            }
            host.rec.record(
                &host.user,
                Op::Ack(format!(
                    "call {call}: negotiation restarted (round {round})"
                )),
            );
            // Let the replays of both sides arrive before the next round's offer.
            host.drain(Duration::from_millis(100)).await;
            guest.drain(Duration::from_millis(100)).await;
        }
        Err(format!(
            "call {call}: negotiation restarted {MAX_ROUNDS} times"
        ))
    }
    .await;
    // Always hang up (also after a failed step, so the next invite is not refused as busy).
    let hung = host
        .request(format!("hangup {call}"), host.client.hangup(&call, "soak"))
        .await;
    result?;
    hung?;
    if let Err(lost) = host
        .confirm(&format!("hangup {call}"), &call, "ended")
        .await
    {
        // Lost in a reconnect (or refused while the room moved): once more.
        host.rec
            .record(&host.user, Op::Ack(format!("retrying: {lost}")));
        host.request(format!("hangup {call}"), host.client.hangup(&call, "soak"))
            .await?;
        host.confirm(&format!("hangup {call}"), &call, "ended")
            .await?;
    }
    call_state(guest, &call, "ended").await
}

/// One offer/answer/ICE round up to both sides seeing Connected; `Ok(false)` when the room
/// restarted negotiation meanwhile (the round must be played again).
async fn negotiate(
    host: &mut Member,
    guest: &mut Member,
    call: &str,
    n: u64,
) -> Result<bool, String> {
    // One base for both sides: either may not have read the latest event yet.
    let since = host.negotiating_seq(call).max(guest.negotiating_seq(call));
    host.request(
        format!("offer {call}"),
        host.client.offer(call, &fake::sdp(SdpKind::Offer, n)),
    )
    .await?;
    let offer = guest
        .wait_or_restart("Offer", call, since, |m| match m {
            Message::Offer(o) if o.call_id == call => Some(()),
            _ => None,
        })
        .await?;
    if offer.is_none() {
        return Ok(false);
    }
    guest
        .request(
            format!("answer {call}"),
            guest.client.answer(call, &fake::sdp(SdpKind::Answer, n)),
        )
        .await?;
    let answer = host
        .wait_or_restart("Answer", call, since, |m| match m {
            Message::Answer(a) if a.call_id == call => Some(()),
            _ => None,
        })
        .await?;
    if answer.is_none() {
        return Ok(false);
    }
    for side in [&*host, &*guest] {
        side.request(
            format!("ice {call}"),
            side.client.ice(call, fake::candidate(0, n)),
        )
        .await?;
        side.request(
            format!("end-of-candidates {call}"),
            side.client.end_of_candidates(call),
        )
        .await?;
    }
    for side in [&mut *host, &mut *guest] {
        let connected = side
            .wait_or_restart(&format!("call {call} connected"), call, since, |m| {
                call_state_event(m, call, "connected").map(drop)
            })
            .await?;
        if connected.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

/// A pair's outcome: the members (to close after the final state is read) and the calls it
/// completed and failed.
pub struct PairDone {
    /// The two members, if they connected.
    pub members: Vec<Member>,
    /// Calls that reached Connected and Ended.
    pub calls_ok: u64,
    /// Calls that failed a step (expected under faults; the checker judges the history).
    pub calls_failed: u64,
    /// Why the pair could not start, if it could not.
    pub setup_error: Option<String>,
}

/// Connects a pair to `room` (index `index`) and plays calls until `stop` turns true.
pub async fn drive_pair(
    urls: Vec<String>,
    room: String,
    index: usize,
    tokens: (String, String),
    rec: Recorder,
    mut stop: watch::Receiver<bool>,
) -> PairDone {
    let host_user = format!("h{index}");
    let guest_user = format!("g{index}");
    let mut done = PairDone {
        members: Vec::new(),
        calls_ok: 0,
        calls_failed: 0,
        setup_error: None,
    };
    let setup = async {
        let mut host =
            Member::connect(&urls, &host_user, &room, tokens.0, index, rec.clone()).await?;
        host.join(&room).await?;
        let mut guest =
            Member::connect(&urls, &guest_user, &room, tokens.1, index, rec.clone()).await?;
        guest.join(&room).await?;
        host.drain(Duration::from_millis(50)).await;
        Ok::<_, String>((host, guest))
    }
    .await;
    let (mut host, mut guest) = match setup {
        Ok(pair) => pair,
        Err(e) => {
            done.setup_error = Some(e);
            return done;
        }
    };
    rec.progress(index);
    let mut n = 0;
    while !*stop.borrow() && !host.dead && !guest.dead {
        n += 1;
        let started_ms = rec.now_ms();
        let started = Instant::now();
        match one_call(&mut host, &mut guest, &room, n).await {
            Ok(()) => {
                done.calls_ok += 1;
                let _ = tokio::time::timeout(
                    CALL_PERIOD.saturating_sub(started.elapsed()),
                    stop.changed(),
                )
                .await;
            }
            Err(e) => {
                done.calls_failed += 1;
                rec.record(
                    &host_user,
                    Op::CallFailed {
                        started_ms,
                        reason: format!("call {n}: {e}"),
                    },
                );
                // Let the fleet settle, then read what is queued before the next call.
                let _ = tokio::time::timeout(Duration::from_millis(300), stop.changed()).await;
                host.drain(Duration::from_millis(20)).await;
                guest.drain(Duration::from_millis(20)).await;
            }
        }
    }
    // Read what is still in flight so the last events are recorded.
    host.drain(Duration::from_millis(300)).await;
    guest.drain(Duration::from_millis(100)).await;
    done.members = vec![host, guest];
    done
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_replayed_seq_is_not_progress() {
        let rec = Recorder::new(2);
        rec.progress_at(0, 5);
        rec.progress_at(1, 3);
        let t = Instant::now();
        std::thread::sleep(Duration::from_millis(2));
        rec.progress_at(0, 5);
        rec.progress_at(1, 2);
        assert_eq!(rec.stalled_since(t), BTreeSet::from([0, 1]));
        rec.progress_at(0, 6);
        assert_eq!(rec.stalled_since(t), BTreeSet::from([1]));
    }
}
