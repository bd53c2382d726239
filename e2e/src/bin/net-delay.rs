//! `net-delay`: holds every packet of one NFQUEUE queue for a random time between `--delay-ms`
//! and `--delay-ms + --jitter-ms` before letting it through, so packets arrive late and overtake
//! each other; after `--seconds` it lets everything through and exits.
//!
//! It stands in for `tc qdisc ... netem delay ... reorder`, which needs `sch_netem` in the
//! kernel. The soak runs it inside a pod's network namespace (`nsenter --net=...`), where
//! `e2e/scripts/node fault queue` sends the pod's packets to the queue with `--queue-bypass`:
//! when this program is not bound, packets pass unharmed.
//!
//! ```text
//! nsenter --net=/proc/PID/ns/net -- net-delay --queue 7 --delay-ms 100 --jitter-ms 100 --for-ms 5000
//! ```
#![forbid(unsafe_code)]

use std::cmp::Reverse;
use std::collections::BinaryHeap;
use std::io::ErrorKind;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Parser;
use nfq::{Queue, Verdict};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// Packets held at once at most; beyond it a packet goes through at once (the kernel's own
/// queue, [`KERNEL_QUEUE_LEN`], lets packets pass when full as well).
const MAX_HELD: usize = 8_192;
/// The kernel's queue length for this queue (fail-open beyond it).
const KERNEL_QUEUE_LEN: u32 = 4_096;
/// How long the loop sleeps when no packet is waiting and none is due.
const IDLE: Duration = Duration::from_micros(500);

#[derive(Debug, Parser)]
#[command(
    name = "net-delay",
    about = "Delay and reorder the packets of an NFQUEUE queue"
)]
struct Cli {
    /// NFQUEUE queue number.
    #[arg(long)]
    queue: u16,
    /// Least delay of a packet, in ms.
    #[arg(long)]
    delay_ms: u64,
    /// Extra random delay of a packet, 0 to this, in ms (more than the gap between two packets
    /// reorders them).
    #[arg(long, default_value_t = 0)]
    jitter_ms: u64,
    /// How long to delay packets, in ms; then everything held goes through and the program
    /// exits.
    #[arg(long)]
    for_ms: u64,
    /// Seed of the random delays.
    #[arg(long, default_value_t = 0)]
    seed: u64,
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let mut queue = Queue::open().context("opening a netfilter queue socket (nfnetlink_queue)")?;
    queue
        .bind(cli.queue)
        .with_context(|| format!("binding NFQUEUE queue {}", cli.queue))?;
    queue
        .set_fail_open(cli.queue, true)
        .context("setting the queue fail-open")?;
    queue
        .set_queue_max_len(cli.queue, KERNEL_QUEUE_LEN)
        .context("setting the queue length")?;
    queue.set_nonblocking(true);
    eprintln!(
        "net-delay: queue {} bound, {}–{} ms for {} ms",
        cli.queue,
        cli.delay_ms,
        cli.delay_ms + cli.jitter_ms,
        cli.for_ms
    );
    let mut rng = StdRng::seed_from_u64(cli.seed);
    let until = Instant::now() + Duration::from_millis(cli.for_ms);
    // Due time and arrival order; the messages themselves sit in `held` under that order.
    let mut due: BinaryHeap<Reverse<(Instant, u64)>> = BinaryHeap::new();
    let mut held = std::collections::HashMap::new();
    let mut arrivals = 0u64;
    let mut passed = 0u64;
    while Instant::now() < until {
        let mut idle = true;
        loop {
            match queue.recv() {
                Ok(mut msg) => {
                    idle = false;
                    if held.len() >= MAX_HELD {
                        msg.set_verdict(Verdict::Accept);
                        queue.verdict(msg).context("passing a packet")?;
                        passed += 1;
                        continue;
                    }
                    let extra = rng.random_range(0..=cli.jitter_ms);
                    let at = Instant::now() + Duration::from_millis(cli.delay_ms + extra);
                    due.push(Reverse((at, arrivals)));
                    held.insert(arrivals, msg);
                    arrivals += 1;
                }
                Err(e) if e.kind() == ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("receiving from the queue"),
            }
        }
        let now = Instant::now();
        while let Some(Reverse((at, n))) = due.peek().copied() {
            if at > now {
                break;
            }
            due.pop();
            if let Some(mut msg) = held.remove(&n) {
                idle = false;
                msg.set_verdict(Verdict::Accept);
                queue.verdict(msg).context("releasing a packet")?;
            }
        }
        if idle {
            std::thread::sleep(IDLE);
        }
    }
    let left = held.len();
    for (_, mut msg) in held.drain() {
        msg.set_verdict(Verdict::Accept);
        queue
            .verdict(msg)
            .context("releasing a packet at the end")?;
    }
    let _ = queue.unbind(cli.queue);
    eprintln!(
        "net-delay: queue {} done: {arrivals} packets delayed, {passed} passed at once (over \
         {MAX_HELD} held), {left} released at the end",
        cli.queue
    );
    Ok(())
}
