//! `signaling-node client`: joins a room and prints every frame, or plays one side of the
//! co-host flow (`--script host|guest`), or both sides at once (`--demo`).

use std::collections::VecDeque;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use super::format::{Printer, short};
use super::{SecretArgs, VersionArg, parse_duration, versions};
use crate::fake::{self, SdpKind};
use crate::script::{Role, Script, Step};
use crate::{Client, ConnectOptions, token_subject};
use switchboard_protocol::auth::{Claims, RoomGrant, mint, unix_now};
use switchboard_protocol::{EventKind, Message};

/// What the client does after joining.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ScriptKind {
    /// Join and print every frame until Ctrl-C.
    Join,
    /// Invite `--invite USER`, offer, trickle ICE, hold the connected call, hang up.
    #[value(alias = "cohost-host")]
    Host,
    /// Wait for an invitation, accept, answer, trickle ICE, wait for the hangup.
    #[value(alias = "cohost-guest")]
    Guest,
}

/// Arguments of `signaling-node client`.
#[derive(Debug, Clone, clap::Args)]
pub struct ClientArgs {
    /// The node's WebSocket URL.
    #[arg(long, default_value = "ws://127.0.0.1:7000/ws")]
    pub url: String,
    /// A join token (from `signaling-node token`); or mint one with the secret and --user.
    #[arg(long, conflicts_with_all = ["jwt_secret_file", "secret"])]
    pub token: Option<String>,
    /// Where the secret to mint a token comes from.
    #[command(flatten)]
    pub secret: SecretArgs,
    /// User id to mint a token for (with --jwt-secret-file / --secret).
    #[arg(long)]
    pub user: Option<String>,
    /// The room to join.
    #[arg(long)]
    pub room: String,
    /// What to do after joining.
    #[arg(long, value_enum, default_value = "join")]
    pub script: ScriptKind,
    /// The guest the host invites (`--script host`; `--demo` default: bob).
    #[arg(long, value_name = "USER")]
    pub invite: Option<String>,
    /// How long the host keeps the connected call before hanging up (seconds or 5s, 1m …).
    #[arg(long, default_value = "5", value_parser = parse_secs)]
    pub hold: Duration,
    /// ICE candidates each side trickles.
    #[arg(long, default_value_t = 2)]
    pub candidates: u16,
    /// Run host (alice) and guest (bob) together in this process: a one-command demo.
    #[arg(long, conflicts_with_all = ["token", "script"])]
    pub demo: bool,
    /// Give up when nothing moves the flow forward for this long.
    #[arg(long, default_value = "30", value_parser = parse_secs)]
    pub step_timeout: Duration,
    /// Protocol versions to offer (repeatable; default v2 and v1).
    #[arg(long = "protocol", value_enum)]
    pub protocols: Vec<VersionArg>,
    /// PEM CA certificates for a wss:// URL.
    #[arg(long, value_name = "FILE")]
    pub ca_file: Option<PathBuf>,
    /// Connect over WebSocket only, never trying WebTransport first.
    #[cfg(feature = "webtransport")]
    #[arg(long)]
    pub no_webtransport: bool,
    /// The nodes' WebTransport UDP port (default: the port number of the wss:// URL).
    #[cfg(feature = "webtransport")]
    #[arg(long, value_name = "PORT")]
    pub webtransport_port: Option<u16>,
    /// How long a WebTransport attempt may take before falling back to WebSocket.
    #[cfg(feature = "webtransport")]
    #[arg(long, value_name = "SECONDS", default_value = "1.5", value_parser = parse_secs)]
    pub webtransport_deadline: Duration,
}

fn parse_secs(text: &str) -> Result<Duration, String> {
    parse_duration(text).map_err(|e| e.to_string())
}

/// Runs the client subcommand.
pub async fn run_client(args: ClientArgs) -> anyhow::Result<()> {
    let start = Instant::now();
    if args.demo {
        return run_demo(&args, start).await;
    }
    let token = match &args.token {
        Some(token) => token.clone(),
        None => {
            let user = args
                .user
                .as_deref()
                .context("pass --token TOKEN, or --user USER with --jwt-secret-file FILE")?;
            mint_for(&args, user)?
        }
    };
    let label = match args.script {
        ScriptKind::Join => "",
        ScriptKind::Host => "host",
        ScriptKind::Guest => "guest",
    };
    let printer = Printer::new(start, label);
    let mut client = connect(&args, &token, &printer).await?;
    let members = join(&client, &args.room, &printer).await?;
    match args.script {
        ScriptKind::Join => listen(&mut client, &printer).await,
        ScriptKind::Host => {
            let invitee = args
                .invite
                .clone()
                .context("--script host needs --invite USER (the guest's user id)")?;
            let script = Script::host(&invitee, args.hold, args.candidates);
            play(&mut client, &args, script, &members, &printer).await?;
            client.close().await;
            Ok(())
        }
        ScriptKind::Guest => {
            let script = Script::guest(args.candidates);
            play(&mut client, &args, script, &members, &printer).await?;
            client.close().await;
            Ok(())
        }
    }
}

fn mint_for(args: &ClientArgs, user: &str) -> anyhow::Result<String> {
    let secret = args.secret.require()?;
    let claims = Claims::new(
        user,
        RoomGrant::Rooms(vec![args.room.clone()]),
        unix_now(),
        3600,
    );
    Ok(mint(&secret, &claims))
}

fn options(args: &ClientArgs, token: &str) -> ConnectOptions {
    let mut options = ConnectOptions::new(token);
    options.versions = versions(&args.protocols);
    options.ca_file = args.ca_file.clone();
    #[cfg(feature = "webtransport")]
    {
        options.webtransport.enabled = !args.no_webtransport;
        options.webtransport.port = args.webtransport_port;
        options.webtransport.deadline = args.webtransport_deadline;
    }
    options
}

async fn connect(args: &ClientArgs, token: &str, printer: &Printer) -> anyhow::Result<Client> {
    let who = token_subject(token).unwrap_or_else(|| "?".into());
    printer.status(&format!("connecting to {} as {who}", args.url));
    let client = Client::connect(&args.url, options(args, token))
        .await
        .with_context(|| format!("cannot connect to {}", args.url))?;
    let session = client.session();
    printer.received(&Message::Welcome(client.welcome().clone()));
    printer.status(&format!(
        "connected to node {} over {} on {} (session {})",
        if session.node.is_empty() {
            "?"
        } else {
            &session.node
        },
        session.version.subprotocol(),
        session.transport,
        short(&session.session)
    ));
    Ok(client)
}

async fn join(client: &Client, room: &str, printer: &Printer) -> anyhow::Result<Vec<String>> {
    printer.sent(&format!("Join room={room}"));
    let joined = client
        .join(room)
        .await
        .with_context(|| format!("cannot join room {room}"))?;
    let members = joined.members.clone();
    printer.received(&Message::Joined(joined));
    Ok(members)
}

/// Prints every frame until Ctrl-C or the connection ends for good.
async fn listen(client: &mut Client, printer: &Printer) -> anyhow::Result<()> {
    printer.status("listening; Ctrl-C to leave");
    loop {
        tokio::select! {
            msg = client.recv() => match msg {
                Ok(msg) => printer.received(&msg),
                Err(err) => {
                    printer.problem(&format!("connection ended: {err}"));
                    return Err(err.into());
                }
            },
            _ = tokio::signal::ctrl_c() => {
                printer.status("leaving");
                return Ok(());
            }
        }
    }
}

/// Plays one side of the co-host flow, printing every frame sent and received.
async fn play(
    client: &mut Client,
    args: &ClientArgs,
    mut script: Script,
    members: &[String],
    printer: &Printer,
) -> anyhow::Result<()> {
    let room = args.room.clone();
    let mut queue: VecDeque<Step> = VecDeque::new();
    match script.role().clone() {
        Role::Host { invitee, .. } => {
            if !members.contains(&invitee) {
                wait_for_member(client, &room, &invitee, args.step_timeout, printer).await?;
            }
        }
        Role::Guest => printer.status("waiting for an invitation"),
    }
    queue.extend(script.start());
    let mut hold_until: Option<tokio::time::Instant> = None;
    loop {
        while let Some(step) = queue.pop_front() {
            perform(
                client,
                &room,
                &mut script,
                step,
                &mut queue,
                &mut hold_until,
                printer,
            )
            .await?;
        }
        if script.is_done() {
            printer.status("co-host flow complete");
            return Ok(());
        }
        let waiting = script.phase().describe();
        let timeout = tokio::time::sleep(args.step_timeout);
        tokio::select! {
            msg = client.recv() => {
                let msg = msg.with_context(|| format!("connection ended while {waiting}"))?;
                printer.received(&msg);
                let steps = script.on_message(&msg).with_context(|| format!("while {waiting}"))?;
                queue.extend(steps);
            }
            () = tokio::time::sleep_until(hold_until.unwrap_or_else(tokio::time::Instant::now)), if hold_until.is_some() => {
                hold_until = None;
                queue.extend(script.held());
            }
            () = timeout, if hold_until.is_none() => {
                bail!("nothing happened for {:?} while {waiting}", args.step_timeout);
            }
            _ = tokio::signal::ctrl_c() => {
                if let Some(call_id) = script.call_id() {
                    let _ = client.hangup(call_id, "interrupted").await;
                }
                bail!("interrupted while {waiting}");
            }
        }
    }
}

/// The host waits until its guest is in the room (it may start first).
async fn wait_for_member(
    client: &mut Client,
    room: &str,
    user: &str,
    timeout: Duration,
    printer: &Printer,
) -> anyhow::Result<()> {
    printer.status(&format!("waiting for {user} to join {room}"));
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let msg = tokio::time::timeout_at(deadline, client.recv())
            .await
            .with_context(|| format!("{user} did not join {room} within {timeout:?}"))??;
        printer.received(&msg);
        if let Message::Event(event) = &msg
            && matches!(
                event.kind,
                EventKind::MemberJoined | EventKind::MemberResumed
            )
            && event.user == user
        {
            return Ok(());
        }
    }
}

async fn perform(
    client: &Client,
    room: &str,
    script: &mut Script,
    step: Step,
    queue: &mut VecDeque<Step>,
    hold_until: &mut Option<tokio::time::Instant>,
    printer: &Printer,
) -> anyhow::Result<()> {
    let stamp = unix_now();
    match step {
        Step::Invite { to } => {
            let call_id = client.invite(room, &to).await.context("sending Invite")?;
            script.invited(&call_id)?;
            printer.sent(&format!("Invite call={} to={to}", short(&call_id)));
            printer.status(script.phase().describe());
        }
        Step::Accept { call_id } => {
            client
                .accept(&call_id)
                .await
                .context("sending InviteResult")?;
            printer.sent(&format!("InviteResult call={} accepted", short(&call_id)));
        }
        Step::Offer { call_id } => {
            let sdp = fake::sdp(SdpKind::Offer, stamp);
            client
                .offer(&call_id, &sdp)
                .await
                .context("sending Offer")?;
            printer.sent(&format!(
                "Offer call={} sdp={}B",
                short(&call_id),
                sdp.len()
            ));
        }
        Step::Answer { call_id } => {
            let sdp = fake::sdp(SdpKind::Answer, stamp);
            client
                .answer(&call_id, &sdp)
                .await
                .context("sending Answer")?;
            printer.sent(&format!(
                "Answer call={} sdp={}B",
                short(&call_id),
                sdp.len()
            ));
        }
        Step::Candidates { call_id, count } => {
            for n in 0..count {
                let candidate = fake::candidate(n, stamp);
                printer.sent(&format!(
                    "IceCandidate call={} {}",
                    short(&call_id),
                    candidate.candidate
                ));
                client
                    .ice(&call_id, candidate)
                    .await
                    .context("sending IceCandidate")?;
            }
            client
                .end_of_candidates(&call_id)
                .await
                .context("sending end-of-candidates")?;
            printer.sent(&format!(
                "IceCandidate call={} end-of-candidates",
                short(&call_id)
            ));
            queue.extend(script.candidates_sent());
        }
        Step::Hold(duration) => {
            printer.status(&format!(
                "call connected; holding it for {:.1} s",
                duration.as_secs_f64()
            ));
            *hold_until = Some(tokio::time::Instant::now() + duration);
        }
        Step::Hangup { call_id } => {
            client
                .hangup(&call_id, "host hung up")
                .await
                .context("sending Hangup")?;
            printer.sent(&format!("Hangup call={}", short(&call_id)));
        }
    }
    Ok(())
}

/// `--demo`: bob (guest) and alice (host) in one process.
async fn run_demo(args: &ClientArgs, start: Instant) -> anyhow::Result<()> {
    let host_user = args.user.clone().unwrap_or_else(|| "alice".into());
    let guest_user = args.invite.clone().unwrap_or_else(|| "bob".into());
    if host_user == guest_user {
        bail!("the host and the guest need different user ids");
    }
    let host_printer = Printer::new(start, "host");
    let guest_printer = Printer::new(start, "guest");
    let mut guest = connect(args, &mint_for(args, &guest_user)?, &guest_printer).await?;
    let guest_members = join(&guest, &args.room, &guest_printer).await?;
    let mut host = connect(args, &mint_for(args, &host_user)?, &host_printer).await?;
    let host_members = join(&host, &args.room, &host_printer).await?;
    let host_script = Script::host(&guest_user, args.hold, args.candidates);
    let guest_script = Script::guest(args.candidates);
    let (host_result, guest_result) = tokio::join!(
        play(&mut host, args, host_script, &host_members, &host_printer),
        play(
            &mut guest,
            args,
            guest_script,
            &guest_members,
            &guest_printer
        ),
    );
    host_result.context("host")?;
    guest_result.context("guest")?;
    host.close().await;
    guest.close().await;
    println!(
        "{}",
        Printer::new(start, "").line(
            "●",
            "demo complete: invite → accept → offer → answer → ICE → connected → hangup"
        )
    );
    Ok(())
}
