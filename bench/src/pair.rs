//! One host/guest pair's load: it first sets up a long-lived "carrier" call (a whole co-host
//! flow left connected), then, during the load window, sends trickle ICE candidates over it on
//! a fixed open-loop schedule (latency measured from the scheduled send time, so a stalled
//! sender or server cannot hide its delay: coordinated-omission corrected) while running full
//! co-host flows (invite → accept → offer → answer → ICE → connected → hangup) on fresh calls
//! at a fixed rate.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tokio::time::{Instant, sleep_until};

use super::conn::{Rx, Tx};
use super::recorder::Recorder;
use switchboard_client::ClientError;
use switchboard_client::fake::{self, SdpKind};
use switchboard_client::script::{Script, Step, message_call_id};
use switchboard_protocol::{ErrorCode, Message};

/// Lateness of a scheduled send attributed to the timer rather than to a stall.
pub const TIMER_SLACK: Duration = Duration::from_millis(2);

/// The load window every pair follows.
#[derive(Debug, Clone, Copy)]
pub struct Window {
    /// First scheduled send.
    pub start: Instant,
    /// No send is scheduled at or after this.
    pub end: Instant,
    /// Stop waiting for in-flight messages.
    pub grace_end: Instant,
}

/// One pair's parameters.
#[derive(Debug, Clone)]
pub struct PairConfig {
    /// The room both are in.
    pub room: String,
    /// The guest's user id (the host invites it).
    pub guest_user: String,
    /// Interval of the open-loop relay stream (`None`: no stream).
    pub relay_interval: Option<Duration>,
    /// Interval between flow starts (`None`: no flows).
    pub flow_interval: Option<Duration>,
    /// Candidates each side sends per flow.
    pub candidates: u16,
    /// Whether the target emits CallState events (see [`Script::without_events`]).
    pub events: bool,
    /// A flow not completed within this is abandoned and counted as an error.
    pub flow_timeout: Duration,
    /// Shared budget of stream messages left (the bench's cap on total messages).
    pub budget: Arc<AtomicU64>,
}

/// A host or guest connection.
#[derive(Debug)]
pub struct Side {
    /// Sending half.
    pub tx: Tx,
    /// Receiving half.
    pub rx: Rx,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Who {
    Host,
    Guest,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Setup,
    WaitStart,
    Load,
    Grace,
}

struct Flow {
    carrier: bool,
    host: Script,
    guest: Script,
    call_id: Option<String>,
    started: std::time::Instant,
    deadline: Instant,
    connected: bool,
}

impl Flow {
    fn done(&self) -> bool {
        if self.carrier {
            self.connected
        } else {
            self.host.is_done() && self.guest.is_done()
        }
    }
}

struct Pair {
    cfg: PairConfig,
    rec: Arc<Recorder>,
    host_tx: Tx,
    guest_tx: Tx,
    carrier: Option<Flow>,
    flow: Option<Flow>,
    carrier_call: Option<String>,
    tick: u64,
    /// Stream candidates are stamped at or after the window start; earlier stamps on the
    /// carrier are its own setup candidates arriving late.
    stream_from: u64,
}

/// Runs one pair until the window's grace period ends (or a connection dies). Reports the
/// carrier's setup through `ready` (true when the stream can run), then waits for `start`.
pub async fn run(
    cfg: PairConfig,
    host: Side,
    guest: Side,
    rec: Arc<Recorder>,
    ready: mpsc::Sender<bool>,
    mut start: watch::Receiver<Option<Window>>,
) {
    let Side {
        tx: host_tx,
        rx: mut host_rx,
    } = host;
    let Side {
        tx: guest_tx,
        rx: mut guest_rx,
    } = guest;
    let mut pair = Pair {
        cfg,
        rec,
        host_tx,
        guest_tx,
        carrier: None,
        flow: None,
        carrier_call: None,
        tick: 0,
        stream_from: u64::MAX,
    };
    let mut phase = Phase::Setup;
    let mut window: Option<Window> = None;
    let mut next_relay = Instant::now();
    let mut next_flow = Instant::now();

    let setup_deadline = Instant::now() + pair.cfg.flow_timeout;
    if let Err(err) = pair.start_flow(true, setup_deadline).await {
        pair.rec.error(&format!("carrier_{}", err.kind()));
        let _ = ready.send(false).await;
        phase = Phase::WaitStart;
    }

    loop {
        if phase == Phase::WaitStart
            && let Some(w) = *start.borrow_and_update()
        {
            window = Some(w);
            phase = Phase::Load;
            pair.stream_from = pair.rec.stamp(w.start.into_std());
            let rng_phase = |interval: Duration| interval.mul_f64(rand::random::<f64>());
            if let Some(interval) = pair.cfg.relay_interval {
                next_relay = w.start + rng_phase(interval);
            }
            if let Some(interval) = pair.cfg.flow_interval {
                next_flow = w.start + rng_phase(interval);
            }
        }
        let (end, grace_end) =
            window.map_or((far_future(), far_future()), |w| (w.end, w.grace_end));
        // A schedule past the window's end is off: a timer that stays ready without sending
        // would starve the (later, biased) end-of-window branch.
        let stream_on = phase == Phase::Load
            && next_relay < end
            && pair.cfg.relay_interval.is_some()
            && pair.carrier_call.is_some()
            && pair.carrier.as_ref().is_some_and(|c| c.connected);
        let flows_on = phase == Phase::Load && next_flow < end && pair.cfg.flow_interval.is_some();
        let deadline = pair.next_deadline();

        tokio::select! {
            biased;
            msg = host_rx.recv() => {
                if !pair.on_incoming(Who::Host, msg, &ready, &mut phase).await {
                    break;
                }
            }
            msg = guest_rx.recv() => {
                if !pair.on_incoming(Who::Guest, msg, &ready, &mut phase).await {
                    break;
                }
            }
            changed = start.changed(), if phase == Phase::WaitStart => {
                if changed.is_err() {
                    break;
                }
            }
            () = sleep_until(next_relay), if stream_on => {
                let interval = pair.cfg.relay_interval.unwrap_or(Duration::from_secs(1));
                // Send every tick whose scheduled time has passed (catching up after a stall);
                // each carries its scheduled time.
                while next_relay <= Instant::now() && next_relay < end {
                    // Ticks that are due are all sent, each with its own schedule.
                    pair.relay_tick(next_relay).await;
                    next_relay += interval;
                }
            }
            () = sleep_until(next_flow), if flows_on => {
                let interval = pair.cfg.flow_interval.unwrap_or(Duration::from_secs(1));
                if next_flow < end {
                    if pair.flow.is_some() {
                        pair.rec.flows_skipped.fetch_add(1, Ordering::Relaxed);
                    } else {
                        let deadline = Instant::now() + pair.cfg.flow_timeout;
                        if let Err(err) = pair.start_flow(false, deadline).await {
                            pair.rec.error(&format!("flow_{}", err.kind()));
                            pair.flow = None;
                        }
                    }
                }
                next_flow += interval;
            }
            () = sleep_until(deadline.unwrap_or_else(far_future)), if deadline.is_some() => {
                pair.expire(&ready, &mut phase).await;
            }
            () = sleep_until(end), if phase == Phase::Load => {
                phase = Phase::Grace;
            }
            () = sleep_until(grace_end), if phase == Phase::Grace => break,
        }
    }
    if let Some(call_id) = pair.carrier_call.take() {
        let _ = pair.host_tx.hangup(&call_id).await;
    }
    // If the loop ended before the carrier reported (a dead connection), report now.
    if phase == Phase::Setup {
        let _ = ready.send(false).await;
    }
}

fn far_future() -> Instant {
    Instant::now() + Duration::from_secs(86_400)
}

/// Relay messages a frame stands for (candidates in a batch count one each).
fn relay_count(msg: &Message) -> u64 {
    match msg {
        Message::Invite(_)
        | Message::InviteResult(_)
        | Message::Offer(_)
        | Message::Answer(_)
        | Message::IceCandidate(_)
        | Message::Hangup(_) => 1,
        Message::IceBatch(batch) => batch.candidates.len() as u64,
        _ => 0,
    }
}

impl Pair {
    fn next_deadline(&self) -> Option<Instant> {
        let pending = |f: &Option<Flow>| f.as_ref().filter(|f| !f.done()).map(|f| f.deadline);
        match (pending(&self.carrier), pending(&self.flow)) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Starts a flow: the host invites the guest.
    async fn start_flow(&mut self, carrier: bool, deadline: Instant) -> Result<(), ClientError> {
        let mut host = Script::host(&self.cfg.guest_user, Duration::ZERO, self.cfg.candidates);
        let mut guest = Script::guest(self.cfg.candidates);
        if !self.cfg.events {
            host = host.without_events();
            guest = guest.without_events();
        }
        guest.start();
        let steps = host.start();
        let flow = Flow {
            carrier,
            host,
            guest,
            call_id: None,
            started: std::time::Instant::now(),
            deadline,
            connected: false,
        };
        if carrier {
            self.carrier = Some(flow);
        } else {
            self.flow = Some(flow);
        }
        self.perform(carrier, Who::Host, steps).await
    }

    /// Performs script steps on one side.
    async fn perform(
        &mut self,
        carrier: bool,
        who: Who,
        steps: Vec<Step>,
    ) -> Result<(), ClientError> {
        let mut queue: std::collections::VecDeque<Step> = steps.into();
        while let Some(step) = queue.pop_front() {
            let room = self.cfg.room.clone();
            let stamp = self.rec.stamp(std::time::Instant::now());
            let (tx, flow) = match (who, carrier) {
                (Who::Host, true) => (&mut self.host_tx, self.carrier.as_mut()),
                (Who::Host, false) => (&mut self.host_tx, self.flow.as_mut()),
                (Who::Guest, true) => (&mut self.guest_tx, self.carrier.as_mut()),
                (Who::Guest, false) => (&mut self.guest_tx, self.flow.as_mut()),
            };
            let Some(flow) = flow else {
                return Ok(());
            };
            let script = match who {
                Who::Host => &mut flow.host,
                Who::Guest => &mut flow.guest,
            };
            let sent = match step {
                Step::Invite { to } => {
                    let call_id = tx.invite(&room, &to).await?;
                    script
                        .invited(&call_id)
                        .map_err(|e| ClientError::Protocol(e.to_string()))?;
                    flow.call_id = Some(call_id.clone());
                    if carrier {
                        self.carrier_call = Some(call_id);
                    }
                    1
                }
                Step::Accept { call_id } => {
                    tx.accept(&call_id).await?;
                    1
                }
                Step::Offer { call_id } => {
                    tx.offer(&call_id, &fake::sdp(SdpKind::Offer, stamp))
                        .await?;
                    1
                }
                Step::Answer { call_id } => {
                    tx.answer(&call_id, &fake::sdp(SdpKind::Answer, stamp))
                        .await?;
                    1
                }
                Step::Candidates { call_id, count } => {
                    for n in 0..count {
                        tx.ice(&call_id, fake::candidate(n, stamp)).await?;
                    }
                    tx.end_of_candidates(&call_id).await?;
                    queue.extend(script.candidates_sent());
                    u64::from(count) + 1
                }
                Step::Hold(_) => {
                    if carrier {
                        flow.connected = true;
                    } else {
                        queue.extend(script.held());
                    }
                    0
                }
                Step::Hangup { call_id } => {
                    tx.hangup(&call_id).await?;
                    tx.forget(&call_id);
                    1
                }
            };
            self.rec.sent(sent);
        }
        Ok(())
    }

    /// Handles one incoming item; `false` ends the pair (its connection is gone).
    async fn on_incoming(
        &mut self,
        who: Who,
        msg: Result<Message, ClientError>,
        ready: &mpsc::Sender<bool>,
        phase: &mut Phase,
    ) -> bool {
        let msg = match msg {
            Ok(msg) => msg,
            Err(err) => {
                self.rec.error(&format!("connection_{}", err.kind()));
                return false;
            }
        };
        let count = relay_count(&msg);
        self.rec.received(count);
        if let Message::Error(error) = &msg {
            let label = ErrorCode::from_code(error.code).map_or("unknown", |c| c.label());
            self.rec.error(&format!("server_{label}"));
            return true;
        }
        let Some(call_id) = message_call_id(&msg).map(str::to_string) else {
            return true;
        };
        // The open-loop stream: candidates on the connected carrier call.
        if self.carrier_call.as_deref() == Some(call_id.as_str())
            && self.carrier.as_ref().is_some_and(|c| c.connected)
        {
            self.on_stream(&msg);
            return true;
        }
        match (&msg, who) {
            (Message::Invite(invite), Who::Guest) => {
                self.guest_tx.observe_invite(&invite.call_id, &invite.from);
            }
            (Message::Hangup(hangup), Who::Guest) => self.guest_tx.forget(&hangup.call_id),
            (Message::Hangup(hangup), Who::Host) => self.host_tx.forget(&hangup.call_id),
            _ => {}
        }
        let carrier = if self.carrier.as_ref().and_then(|f| f.call_id.as_deref()) == Some(&call_id)
        {
            true
        } else if self.flow.as_ref().and_then(|f| f.call_id.as_deref()) == Some(&call_id) {
            false
        } else {
            return true;
        };
        let flow = if carrier {
            self.carrier.as_mut()
        } else {
            self.flow.as_mut()
        };
        let Some(flow) = flow else {
            return true;
        };
        let script = match who {
            Who::Host => &mut flow.host,
            Who::Guest => &mut flow.guest,
        };
        let steps = match script.on_message(&msg) {
            Ok(steps) => steps,
            Err(err) => {
                self.fail_flow(carrier, &format!("script: {err}"), ready, phase)
                    .await;
                return true;
            }
        };
        if let Err(err) = self.perform(carrier, who, steps).await {
            self.fail_flow(carrier, &err.to_string(), ready, phase)
                .await;
            if matches!(err, ClientError::Closed | ClientError::ConnectionLost) {
                return false;
            }
            return true;
        }
        self.check_done(carrier, ready, phase).await;
        true
    }

    fn on_stream(&mut self, msg: &Message) {
        let now = std::time::Instant::now();
        let record = |candidate: &str| {
            if candidate.is_empty() {
                return;
            }
            match fake::candidate_stamp(candidate) {
                Some(stamp) if stamp < self.stream_from => {}
                Some(stamp) => {
                    self.rec.record_relay(self.rec.since_stamp(stamp, now));
                    self.rec.stream_received.fetch_add(1, Ordering::Relaxed);
                }
                None => self.rec.error("relay_unstamped"),
            }
        };
        match msg {
            Message::IceCandidate(c) => record(&c.candidate),
            Message::IceBatch(batch) => batch.candidates.iter().for_each(|c| record(&c.candidate)),
            _ => {}
        }
    }

    async fn check_done(&mut self, carrier: bool, ready: &mpsc::Sender<bool>, phase: &mut Phase) {
        let slot = if carrier {
            &mut self.carrier
        } else {
            &mut self.flow
        };
        let Some(flow) = slot.as_ref() else {
            return;
        };
        if !flow.done() {
            return;
        }
        if carrier {
            if *phase == Phase::Setup {
                let _ = ready.send(true).await;
                *phase = Phase::WaitStart;
            }
        } else {
            // Carrier setups happen all at once before the window; only paced flows count.
            self.rec.record_flow(flow.started.elapsed());
            *slot = None;
        }
    }

    async fn fail_flow(
        &mut self,
        carrier: bool,
        why: &str,
        ready: &mpsc::Sender<bool>,
        phase: &mut Phase,
    ) {
        tracing::debug!(carrier, why, room = %self.cfg.room, "bench flow failed");
        let slot = if carrier {
            self.carrier.take()
        } else {
            self.flow.take()
        };
        self.rec.error(if carrier {
            "carrier_failed"
        } else {
            "flow_failed"
        });
        if let Some(call_id) = slot.and_then(|f| f.call_id) {
            let _ = self.host_tx.hangup(&call_id).await;
            if carrier {
                self.carrier_call = None;
            }
        }
        if carrier && *phase == Phase::Setup {
            let _ = ready.send(false).await;
            *phase = Phase::WaitStart;
        }
    }

    /// Abandons flows past their deadline.
    async fn expire(&mut self, ready: &mpsc::Sender<bool>, phase: &mut Phase) {
        let now = Instant::now();
        if self
            .carrier
            .as_ref()
            .is_some_and(|f| !f.done() && f.deadline <= now)
        {
            self.rec.error("carrier_timeout");
            self.fail_flow(true, "timeout", ready, phase).await;
        }
        if self
            .flow
            .as_ref()
            .is_some_and(|f| !f.done() && f.deadline <= now)
        {
            self.rec.error("flow_timeout");
            self.fail_flow(false, "timeout", ready, phase).await;
        }
    }

    /// One open-loop send scheduled at `at`, alternating direction.
    async fn relay_tick(&mut self, at: Instant) {
        let Some(call_id) = self.carrier_call.clone() else {
            return;
        };
        if self
            .cfg
            .budget
            .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |left| {
                left.checked_sub(1)
            })
            .is_err()
        {
            return;
        }
        // Latency counts from the scheduled time (coordinated-omission correction), except that
        // a send firing within the timer's granularity of its schedule is stamped when it
        // fires: tokio timers round up to the next millisecond, which would otherwise add up
        // to 1 ms of load-generator delay to every sample.
        let now = Instant::now();
        let from = if now.saturating_duration_since(at) <= TIMER_SLACK {
            now
        } else {
            at
        };
        let stamp = self.rec.stamp(from.into_std());
        self.tick += 1;
        let candidate = fake::candidate((self.tick % 1000) as u16, stamp);
        let tx = if self.tick.is_multiple_of(2) {
            &mut self.host_tx
        } else {
            &mut self.guest_tx
        };
        match tx.ice(&call_id, candidate).await {
            Ok(()) => {
                self.rec.stream_sent.fetch_add(1, Ordering::Relaxed);
                self.rec.sent(1);
            }
            Err(err) => self.rec.error(&format!("relay_send_{}", err.kind())),
        }
    }
}
