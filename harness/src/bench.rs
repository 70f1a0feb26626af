//! Throughput, latency and memory loads for `benches/throughput.rs` and
//! the `bench` binary (`src/bin/bench.rs`), run against the raw binding
//! and through actix-cpg in the same run.
//!
//! ```text
//!  orchestrator (`bench` binary / criterion bench)     member processes
//!  ───────────────────────────────────────────────     ────────────────
//!  run_case(case) ── spawns, per member ──►  [ip netns exec acpg-nN] <same exe>
//!        ▲                                       with ACPG_BENCH_CHILD=<spec>
//!        │   PROGRESS n / REPORT ... lines  ◄──  child_main(): one member
//!        └── aggregates: msgs/s, MB/s, latency percentiles, peak RSS
//! ```
//!
//! On the sim backend one child process holds the whole simulated cluster
//! (every member a task), so its peak RSS covers all of them.
//!
//! Paths:
//!
//! - [`Path::Raw`]: the binding itself. On corosync, `rust_corosync::cpg`
//!   directly (`mcast_joined` with agreed order, `dispatch(All)` when the fd
//!   is readable), keeping at most `window` messages in flight until
//!   self-delivery, like the group runtime; on sim, the transport trait.
//! - [`Path::Floor`]: the binding as on the raw path, plus a bincode
//!   decode of every delivered message and a `do_send` into an actix actor
//!   on every member, one message per multicast or batched up to the
//!   library's batch cap (`floor` below): what any actix-based design has
//!   to pay at least.
//! - [`Path::Actor`]: a registered actor receiving typed messages through a
//!   `Group` (one `sink-N` actor per member; each sender tells its own, so
//!   every message travels to every member and back to the sender's actor).
//!
//! Figures: a run's duration is from the first send of any sender to the
//! moment the last member has received every message (wall clock, shared
//! by all processes of the machine); messages/s and MB/s are per member
//! (every member receives all of them). Latency is from the send call to
//! self-delivery (for the actor path: to the sender's own actor handling
//! it), measured in the sender.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::fmt;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::rc::Rc;
use std::str::FromStr;
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::LazyLock;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use actix::prelude::*;
use serde::{Deserialize, Serialize};

use actix_cpg::transport::sim::SimCluster;
use actix_cpg::transport::{
    Connection, GroupName, NodeId, Transport, TransportError, TransportEvent,
};
use actix_cpg::{
    BatchConfig, CallError, Group, GroupConfig, GroupEvent, GroupKey, Handlers, RemoteMessage,
};

mod floor;
pub mod sizes;
pub mod stages;

use floor::{FloorDelivery, FloorSender, FloorSink};

/// The environment variable that turns a bench executable into a member.
pub const CHILD_ENV: &str = "ACPG_BENCH_CHILD";

/// Bytes of a raw message before its padding: magic, sequence, timestamp.
const RAW_HEADER: usize = 20;
const RAW_MAGIC: [u8; 4] = *b"BNCH";
/// Bytes of a [`Blob`] besides its data: seq, ts, and the data's length.
const BLOB_OVERHEAD: usize = 24;
/// Bytes of payload beyond one message's, whose windows the actor path's
/// messages carry (see [`Payload`]).
const PAYLOAD_POOL: usize = 1 << 20;
/// Latency samples kept per sender.
const MAX_SAMPLES: usize = 1 << 20;
/// How often an actor member checks whether everything arrived (the group
/// has no event for requests hosted elsewhere).
const END_POLL: Duration = Duration::from_millis(5);
/// How often a member reports progress.
const PROGRESS_EVERY: Duration = Duration::from_millis(250);
/// A case that has not finished in this long is killed and reported.
const CASE_TIMEOUT: Duration = Duration::from_secs(90);
/// How often the raw loop dispatches without waiting for readiness.
#[cfg(feature = "corosync")]
const SWEEP: Duration = Duration::from_millis(100);

static EPOCH: LazyLock<Instant> = LazyLock::new(Instant::now);

fn mono_ns() -> u64 {
    EPOCH.elapsed().as_nanos() as u64
}

fn wall_ns() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0)
}

/// Where the members run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// The in-process simulated cluster (labelled as such in every table).
    Sim,
    /// The real cluster of `scripts/cluster.sh`, one process per node.
    Corosync,
}

/// What carries the messages.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Path {
    /// The binding directly, with the same send window.
    Raw,
    /// The binding, a bincode decode of every message and a `do_send` into
    /// an actix actor on every member (`floor`): the floor of any
    /// actix-based design, with the raw path's send window.
    Floor {
        /// Whether messages are packed behind lengths into multicasts of
        /// up to the library's batch cap.
        batching: bool,
    },
    /// A registered actor through a `Group`.
    Actor {
        /// Whether small messages are packed into batches.
        batching: bool,
        /// Whether the group has a key ([`GroupConfig::key`]): every
        /// multicast carries a MAC and every delivery is verified.
        keyed: bool,
    },
}

impl fmt::Display for Path {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Path::Raw => "raw",
            Path::Floor { batching: false } => "floor",
            Path::Floor { batching: true } => "floor+batch",
            Path::Actor {
                batching: false,
                keyed: false,
            } => "actor",
            Path::Actor {
                batching: true,
                keyed: false,
            } => "actor+batch",
            Path::Actor {
                batching: false,
                keyed: true,
            } => "actor+key",
            Path::Actor {
                batching: true,
                keyed: true,
            } => "actor+batch+key",
        })
    }
}

impl FromStr for Path {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "raw" => Ok(Path::Raw),
            "floor" => Ok(Path::Floor { batching: false }),
            "floor+batch" => Ok(Path::Floor { batching: true }),
            "actor" => Ok(Path::Actor {
                batching: false,
                keyed: false,
            }),
            "actor+batch" => Ok(Path::Actor {
                batching: true,
                keyed: false,
            }),
            "actor+key" => Ok(Path::Actor {
                batching: false,
                keyed: true,
            }),
            "actor+batch+key" => Ok(Path::Actor {
                batching: true,
                keyed: true,
            }),
            other => Err(format!("unknown path {other:?}")),
        }
    }
}

/// What the actor path's messages carry (the raw and floor paths send
/// their own filler: corosync does not look at it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Payload {
    /// Bytes that do not compress (a xorshift stream): what the tables
    /// measure by default, so compression (on by default above
    /// [`GroupConfig::compress_above`]) costs its attempt and gains
    /// nothing.
    Random,
    /// JSON-like text: records with repeated keys, as real payloads are.
    Json,
}

impl Payload {
    /// `len` bytes of this kind.
    pub fn bytes(self, len: usize) -> Vec<u8> {
        match self {
            Payload::Random => {
                let mut x = 0x9e37_79b9_7f4a_7c15u64;
                (0..len)
                    .map(|_| {
                        x ^= x << 13;
                        x ^= x >> 7;
                        x ^= x << 17;
                        (x >> 24) as u8
                    })
                    .collect()
            }
            Payload::Json => {
                let mut out = Vec::with_capacity(len + 128);
                let mut i = 0u64;
                while out.len() < len {
                    out.extend_from_slice(
                        format!(
                            r#"{{"id":{i},"user":"user-{}","action":"update","ts":{},"fields":{{"qty":{},"ok":true}}}},"#,
                            i % 97,
                            1_700_000_000_000u64 + i * 37,
                            i % 13
                        )
                        .as_bytes(),
                    );
                    i += 1;
                }
                out.truncate(len);
                out
            }
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Payload::Random => "random",
            Payload::Json => "json",
        }
    }
}

impl FromStr for Payload {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "random" => Ok(Payload::Random),
            "json" => Ok(Payload::Json),
            other => Err(format!("unknown payload {other:?}")),
        }
    }
}

/// One load: who sends what, how much, how fast.
#[derive(Debug, Clone, PartialEq)]
pub struct Load {
    /// Bytes of each message (the raw payload, or the actor message as
    /// serialized); at least 24.
    pub size: usize,
    /// Messages each sender sends.
    pub count: u64,
    /// Members of the group (one per node on corosync: 1 to 3).
    pub members: usize,
    /// How many of them send (members `0..senders`).
    pub senders: usize,
    /// Messages per second per sender, or `None` for as fast as the window
    /// and queue allow.
    pub rate: Option<f64>,
    /// Messages in flight until self-delivery (the raw loop's window and
    /// the group's `send_window`).
    pub window: usize,
    /// Send for this long instead of `count` messages, sampling RSS each
    /// second (the overload mode).
    pub duration: Option<Duration>,
    /// What the actor path's messages carry.
    pub payload: Payload,
    /// Whether the actor path's group compresses large multicasts
    /// ([`GroupConfig::compress_above`] at its default), or never.
    pub compress: bool,
    /// Whether the actor path's sink reads the blob's data as a
    /// [`actix_cpg::wire::Payload`] (sharing the delivered buffer) instead
    /// of a `Vec<u8>`; the sender's bytes are the same either way.
    pub shared: bool,
    /// Whether the members time the library's stages
    /// ([`actix_cpg::stages`]): a profile run, not a throughput run.
    pub stages: bool,
}

impl Load {
    /// `count` messages of `size` bytes from each of `senders` of
    /// `members`, as fast as the window allows, random payloads,
    /// compression allowed, stages not timed.
    pub fn unpaced(size: usize, count: u64, members: usize, senders: usize) -> Load {
        Load {
            size,
            count,
            members,
            senders,
            rate: None,
            window: 64,
            duration: None,
            payload: Payload::Random,
            compress: true,
            shared: false,
            stages: false,
        }
    }

    /// Every message delivered to each member.
    pub fn expected(&self) -> u64 {
        self.count.saturating_mul(self.senders as u64)
    }

    fn to_spec(&self) -> String {
        format!(
            "size={} count={} members={} senders={} rate={} window={} duration={} payload={} compress={} shared={} stages={}",
            self.size,
            self.count,
            self.members,
            self.senders,
            self.rate.unwrap_or(0.0),
            self.window,
            self.duration.map(|d| d.as_secs_f64()).unwrap_or(0.0),
            self.payload.as_str(),
            u8::from(self.compress),
            u8::from(self.shared),
            u8::from(self.stages),
        )
    }
}

/// What one member measured.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Report {
    /// The member's index.
    pub index: usize,
    /// Messages it sent.
    pub sent: u64,
    /// Messages delivered to it.
    pub delivered: u64,
    /// Wall clock (ns) of its first send; 0 if it sent nothing.
    pub start_ns: u64,
    /// Wall clock (ns) when it had received everything.
    pub end_ns: u64,
    /// Send-to-self-delivery latency of its own messages.
    pub latency: Option<Latency>,
    /// Its process's peak resident set (VmHWM), KiB.
    pub peak_rss_kib: u64,
    /// CPU time its process used, user and system, µs (on the sim, every
    /// member's report names the one process's).
    pub cpu_us: u64,
    /// Its process.
    pub pid: u32,
    /// `TRY_AGAIN` answers it met.
    pub try_again: u64,
    /// Multicasts it made (fewer than `sent` when batching).
    pub multicasts: u64,
    /// Of those, multicasts that went compressed (the actor path's
    /// `GroupMetrics::compressed_sent`; 0 on the other paths).
    pub compressed: u64,
    /// In overload mode: (second, RSS KiB) samples of its process.
    pub rss_samples: Vec<(u64, u64)>,
    /// From the moment it was ready to its end: CPU time, messages, and
    /// the library's stages if timed.
    pub run: stages::StageReport,
}

/// Latency percentiles, in microseconds.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Latency {
    /// Samples behind the figures.
    pub samples: u64,
    /// Median.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
}

impl Latency {
    /// Percentiles of `samples` (nanoseconds); `None` if empty.
    pub fn of(samples: &mut [u64]) -> Option<Latency> {
        if samples.is_empty() {
            return None;
        }
        samples.sort_unstable();
        let at = |q: f64| {
            let i = ((samples.len() as f64 * q).ceil() as usize).clamp(1, samples.len()) - 1;
            samples[i] as f64 / 1000.0
        };
        Some(Latency {
            samples: samples.len() as u64,
            p50_us: at(0.50),
            p99_us: at(0.99),
            p999_us: at(0.999),
        })
    }
}

impl Report {
    /// The line a member prints for the orchestrator.
    pub fn to_line(&self) -> String {
        let lat = self
            .latency
            .map(|l| format!("{},{},{},{}", l.samples, l.p50_us, l.p99_us, l.p999_us))
            .unwrap_or_else(|| "-".into());
        let rss = self
            .rss_samples
            .iter()
            .map(|(s, k)| format!("{s}:{k}"))
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "REPORT index={} sent={} delivered={} start={} end={} lat={} peak_rss={} cpu={} pid={} try_again={} multicasts={} compressed={} rss={} {}",
            self.index,
            self.sent,
            self.delivered,
            self.start_ns,
            self.end_ns,
            lat,
            self.peak_rss_kib,
            self.cpu_us,
            self.pid,
            self.try_again,
            self.multicasts,
            self.compressed,
            if rss.is_empty() { "-".into() } else { rss },
            self.run.to_words(),
        )
    }

    /// Parses [`Report::to_line`]; `None` if it is not one.
    pub fn parse(line: &str) -> Option<Report> {
        let rest = line.strip_prefix("REPORT ")?;
        let mut r = Report::default();
        for word in rest.split(' ') {
            let (k, v) = word.split_once('=')?;
            match k {
                "index" => r.index = v.parse().ok()?,
                "sent" => r.sent = v.parse().ok()?,
                "delivered" => r.delivered = v.parse().ok()?,
                "start" => r.start_ns = v.parse().ok()?,
                "end" => r.end_ns = v.parse().ok()?,
                "peak_rss" => r.peak_rss_kib = v.parse().ok()?,
                "cpu" => r.cpu_us = v.parse().ok()?,
                "pid" => r.pid = v.parse().ok()?,
                "try_again" => r.try_again = v.parse().ok()?,
                "multicasts" => r.multicasts = v.parse().ok()?,
                "compressed" => r.compressed = v.parse().ok()?,
                "lat" if v != "-" => {
                    let f: Vec<f64> = v.split(',').filter_map(|x| x.parse().ok()).collect();
                    if let [samples, p50, p99, p999] = f[..] {
                        r.latency = Some(Latency {
                            samples: samples as u64,
                            p50_us: p50,
                            p99_us: p99,
                            p999_us: p999,
                        });
                    }
                }
                "rss" if v != "-" => {
                    r.rss_samples = v
                        .split(',')
                        .filter_map(|p| {
                            let (s, k) = p.split_once(':')?;
                            Some((s.parse().ok()?, k.parse().ok()?))
                        })
                        .collect();
                }
                _ => {
                    r.run.take_word(k, v);
                }
            }
        }
        Some(r)
    }
}

fn proc_status_kib(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix(field)?
                    .trim()
                    .trim_end_matches("kB")
                    .trim()
                    .parse()
                    .ok()
            })
        })
        .unwrap_or(0)
}

/// CPU time this process used so far, user and system, in µs (from
/// `/proc/self/stat`, in clock ticks of 10 ms); 0 if it cannot tell.
pub fn cpu_us() -> u64 {
    // Fields after the command name, which may hold spaces: state is the
    // 3rd field of the line, utime the 14th and stime the 15th.
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return 0;
    };
    let Some((_, rest)) = stat.rsplit_once(") ") else {
        return 0;
    };
    let fields: Vec<&str> = rest.split(' ').collect();
    let tick = |i: usize| {
        fields
            .get(i)
            .and_then(|f| f.parse::<u64>().ok())
            .unwrap_or(0)
    };
    // USER_HZ is 100 on Linux whatever the kernel's own tick.
    (tick(11) + tick(12)) * 10_000
}

/// This process's peak resident set, KiB.
pub fn peak_rss_kib() -> u64 {
    proc_status_kib("VmHWM:")
}

/// This process's resident set now, KiB.
pub fn rss_kib() -> u64 {
    proc_status_kib("VmRSS:")
}

/// Paces a sender: when the next message is due, and RSS samples.
struct Pacer {
    started: Instant,
    rate: Option<f64>,
    until: Option<Instant>,
    next_sample: u64,
    samples: Vec<(u64, u64)>,
}

impl Pacer {
    fn new(load: &Load) -> Pacer {
        let started = Instant::now();
        Pacer {
            started,
            rate: load.rate.filter(|r| *r > 0.0),
            until: load.duration.map(|d| started + d),
            next_sample: 0,
            samples: Vec::new(),
        }
    }

    /// When message number `sent` may go (`None`: now).
    fn due(&self, sent: u64) -> Option<Instant> {
        let rate = self.rate?;
        let at = self.started + Duration::from_secs_f64(sent as f64 / rate);
        (at > Instant::now()).then_some(at)
    }

    /// Whether a sender with `sent` messages out is done sending.
    fn done(&self, sent: u64, count: u64) -> bool {
        match self.until {
            Some(until) => Instant::now() >= until,
            None => sent >= count,
        }
    }

    fn sample_rss(&mut self) {
        if self.until.is_none() {
            return;
        }
        let secs = self.started.elapsed().as_secs();
        if secs >= self.next_sample {
            self.samples.push((secs, rss_kib()));
            self.next_sample = secs + 1;
        }
    }
}

/// The next multicast of a raw or floor sender, from message `sent` on, and
/// how many messages it carries: one raw message, or as many floor messages
/// as are due and fit in one batch.
fn next_multicast<'a>(
    floor: Option<&'a mut FloorSide>,
    buf: &'a mut [u8],
    sent: u64,
    pacer: &Pacer,
    count: u64,
) -> (&'a [u8], u64) {
    match floor {
        Some(side) => {
            let mut k = 0;
            side.sender.fill(|| {
                let seq = sent + k;
                let go = !pacer.done(seq, count) && pacer.due(seq).is_none();
                k += u64::from(go);
                go.then_some(seq)
            })
        }
        None => {
            encode_raw(buf, sent);
            (&buf[..], 1)
        }
    }
}

fn encode_raw(buf: &mut [u8], seq: u64) {
    buf[..4].copy_from_slice(&RAW_MAGIC);
    buf[4..12].copy_from_slice(&seq.to_le_bytes());
    buf[12..20].copy_from_slice(&mono_ns().to_le_bytes());
}

/// The send timestamp of a raw bench message, if it is one.
fn raw_sent_at(msg: &[u8]) -> Option<u64> {
    if msg.get(..4)? != RAW_MAGIC {
        return None;
    }
    Some(u64::from_le_bytes(msg.get(12..20)?.try_into().ok()?))
}

fn raw_seq(msg: &[u8]) -> Option<u64> {
    Some(u64::from_le_bytes(msg.get(4..12)?.try_into().ok()?))
}

fn raw_buffer(size: usize) -> Vec<u8> {
    vec![0xa5; size.max(RAW_HEADER)]
}

/// Samples of a sender's own deliveries and counts of all deliveries.
#[derive(Default)]
struct Tally {
    delivered: u64,
    own: u64,
    samples: Vec<u64>,
    /// Off in the overload mode, whose RSS samples would otherwise show
    /// this vector growing.
    sampling: bool,
    /// The largest view seen so far.
    view: usize,
    /// Own messages that did not come in the order sent.
    out_of_order: u64,
}

impl Tally {
    fn new(load: &Load) -> Tally {
        Tally {
            sampling: load.duration.is_none(),
            ..Tally::default()
        }
    }

    fn own_delivered(&mut self, sent_at: Option<u64>) {
        self.own += 1;
        if let Some(t) = sent_at.filter(|_| self.sampling) {
            if self.samples.len() < MAX_SAMPLES {
                self.samples.push(mono_ns().saturating_sub(t));
            }
        }
    }
}

/// One raw member over the transport trait (the sim backend's "binding").
pub async fn raw_member<C: Connection>(
    conn: C,
    load: &Load,
    index: usize,
    progress: &dyn Fn(u64),
) -> Result<Report, String> {
    binding_member(conn, load, index, None, progress).await
}

/// One member of the floor over the transport trait: the raw member, plus
/// a bincode decode of every delivery and a `do_send` into an actor
/// (`floor`); batched behind lengths if `batching`.
pub async fn floor_member<C: Connection>(
    conn: C,
    load: &Load,
    index: usize,
    batching: bool,
    progress: &dyn Fn(u64),
) -> Result<Report, String> {
    binding_member(conn, load, index, Some(batching), progress).await
}

/// The floor's side of a member on the binding: its sender, its actor,
/// and what the actor counted.
struct FloorSide {
    batching: bool,
    sender: FloorSender,
    sink: Addr<FloorSink>,
    handled: Rc<RefCell<Tally>>,
    /// Multicasts that did not split or decode (floor rule 4).
    refused: u64,
}

impl FloorSide {
    fn new(load: &Load, batching: bool) -> FloorSide {
        let handled = Rc::new(RefCell::new(Tally::new(load)));
        FloorSide {
            batching,
            sender: FloorSender::new(batching, load.size),
            sink: FloorSink {
                tally: handled.clone(),
            }
            .start(),
            handled,
            refused: 0,
        }
    }

    fn deliver(&mut self, own: bool, bytes: &[u8]) {
        let sink = &self.sink;
        let decoded = floor::for_each_blob(bytes, self.batching, |blob| {
            sink.do_send(FloorDelivery { own, blob })
        });
        if decoded.is_err() {
            self.refused += 1;
        }
    }

    /// (messages its actor handled, own messages it handled).
    fn handled(&self) -> (u64, u64) {
        let t = self.handled.borrow();
        (t.delivered, t.own)
    }
}

async fn binding_member<C: Connection>(
    mut conn: C,
    load: &Load,
    index: usize,
    floor: Option<bool>,
    progress: &dyn Fn(u64),
) -> Result<Report, String> {
    let local = conn.local();
    // Raw: messages. Floor: multicasts (the window's unit); the floor's
    // actor counts the messages.
    let mut tally = Tally::new(load);
    let mut floor = floor.map(|batching| FloorSide::new(load, batching));
    let handle =
        |event: TransportEvent, tally: &mut Tally, floor: &mut Option<FloorSide>| match event {
            TransportEvent::Deliver { from, bytes } => match floor {
                Some(side) => {
                    tally.delivered += 1;
                    if from == local {
                        tally.own += 1;
                    }
                    side.deliver(from == local, &bytes);
                }
                None => {
                    if let Some(at) = raw_sent_at(&bytes) {
                        tally.delivered += 1;
                        if from == local {
                            if raw_seq(&bytes) != Some(tally.own) {
                                tally.out_of_order += 1;
                            }
                            tally.own_delivered(Some(at));
                        }
                    }
                }
            },
            TransportEvent::ConfChg { members, .. } => tally.view = tally.view.max(members.len()),
            _ => {}
        };
    while tally.view < load.members {
        let event = actix_cpg::transport::next_event(&mut conn)
            .await
            .map_err(|e| e.to_string())?;
        handle(event, &mut tally, &mut floor);
    }
    let ready = stages::Ready::mark(tally.delivered);
    let sender = index < load.senders;
    let mut pacer = Pacer::new(load);
    let mut buf = raw_buffer(load.size);
    let (mut sent, mut multicasts, mut try_again, mut start_ns) = (0u64, 0u64, 0u64, 0u64);
    let mut last_progress = Instant::now();
    let expected = load.expected();
    loop {
        let mut blocked = false;
        // Computed once per round: a deadline that passes between two
        // looks must still wake the loop.
        let mut due = None;
        while sender && !pacer.done(sent, load.count) && multicasts - tally.own < load.window as u64
        {
            due = pacer.due(sent);
            if due.is_some() {
                break;
            }
            let (bytes, n) = next_multicast(floor.as_mut(), &mut buf, sent, &pacer, load.count);
            match conn.mcast(bytes) {
                Ok(()) => {
                    if sent == 0 {
                        start_ns = wall_ns();
                    }
                    sent += n;
                    multicasts += 1;
                }
                // The floor's blobs are encoded again (new timestamps).
                Err(TransportError::TryAgain) => {
                    try_again += 1;
                    blocked = true;
                    break;
                }
                Err(e) => return Err(e.to_string()),
            }
        }
        pacer.sample_rss();
        let finished_sending = !sender || pacer.done(sent, load.count);
        let (delivered, own) = match &floor {
            Some(side) => side.handled(),
            None => (tally.delivered, tally.own),
        };
        // Overload mode: every member sends, and stops once its own are in.
        let all_in = load.duration.is_some() || delivered >= expected;
        if finished_sending && all_in && own >= sent {
            break;
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            progress(delivered);
            last_progress = Instant::now();
        }
        tokio::select! {
            event = actix_cpg::transport::next_event(&mut conn) => {
                handle(event.map_err(|e| e.to_string())?, &mut tally, &mut floor);
            }
            _ = tokio::time::sleep(Duration::from_millis(1)), if blocked => {}
            _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {}
            // The floor's actor runs between events; its progress is
            // looked at again soon.
            _ = tokio::time::sleep(Duration::from_millis(1)), if floor.is_some() && finished_sending => {}
        }
    }
    let end_ns = wall_ns();
    let run = ready.finish(tally.delivered);
    let _ = conn.leave();
    let (mut tally, delivered) = match floor {
        Some(side) => {
            if side.refused > 0 {
                return Err(format!(
                    "member {index} refused {} floor multicasts",
                    side.refused
                ));
            }
            let handled = side.handled.take();
            let delivered = handled.delivered;
            (handled, delivered)
        }
        None => {
            let delivered = tally.delivered;
            (tally, delivered)
        }
    };
    if tally.out_of_order > 0 {
        return Err(format!(
            "{} of member {index}'s own messages came back out of order",
            tally.out_of_order
        ));
    }
    Ok(Report {
        index,
        sent,
        delivered,
        start_ns,
        end_ns,
        latency: Latency::of(&mut tally.samples),
        peak_rss_kib: peak_rss_kib(),
        cpu_us: cpu_us(),
        pid: std::process::id(),
        try_again,
        multicasts,
        compressed: 0,
        rss_samples: pacer.samples,
        run,
    })
}

/// The actor path's message: a sequence number, a send timestamp and a
/// blob, serialized to the load's size.
#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "()")]
pub struct Blob {
    /// 0, 1, 2, … per sender.
    pub seq: u64,
    /// When it was sent (ns on the sender's monotonic clock).
    pub ts: u64,
    /// Padding to the load's size.
    #[serde(with = "actix_cpg::wire::bytes")]
    pub data: Vec<u8>,
}

impl RemoteMessage for Blob {
    const TYPE_TAG: &'static str = "actix-cpg.bench.Blob";
}

/// [`Blob`] as the sink reads it with `Load::shared`: the same bytes on
/// the wire, its data a [`actix_cpg::wire::Payload`] that shares the
/// delivered buffer.
#[derive(Message, Serialize, Deserialize, Debug, Clone)]
#[rtype(result = "()")]
pub struct SharedBlob {
    /// 0, 1, 2, … per sender.
    pub seq: u64,
    /// When it was sent (ns on the sender's monotonic clock).
    pub ts: u64,
    /// Padding to the load's size, shared with the delivery.
    pub data: actix_cpg::wire::Payload,
}

impl RemoteMessage for SharedBlob {
    const TYPE_TAG: &'static str = Blob::TYPE_TAG;
}

struct BenchSink {
    tally: Rc<RefCell<Tally>>,
}

impl Actor for BenchSink {
    type Context = Context<Self>;
}

impl BenchSink {
    fn tally(&self, seq: u64, ts: u64) {
        let _handler = actix_cpg::stages::time(actix_cpg::stages::Stage::Handler);
        let mut tally = self.tally.borrow_mut();
        // One sender per sink: its blobs must come in the order sent.
        if seq != tally.own {
            tally.out_of_order += 1;
        }
        tally.own_delivered(Some(ts));
    }
}

impl Handler<Blob> for BenchSink {
    type Result = ();
    fn handle(&mut self, blob: Blob, _: &mut Context<Self>) {
        self.tally(blob.seq, blob.ts);
    }
}

impl Handler<SharedBlob> for BenchSink {
    type Result = ();
    fn handle(&mut self, blob: SharedBlob, _: &mut Context<Self>) {
        self.tally(blob.seq, blob.ts);
    }
}

/// The key of the keyed paths: every member of a run derives the same one.
fn bench_key() -> GroupKey {
    GroupKey::from_passphrase("actix-cpg bench: not a secret")
}

/// The group configuration of a path.
pub fn group_config(path: Path, window: usize) -> GroupConfig {
    GroupConfig {
        send_window: window,
        batch: match path {
            Path::Actor { batching: true, .. } => BatchConfig::default(),
            _ => BatchConfig::disabled(),
        },
        key: match path {
            Path::Actor { keyed: true, .. } => Some(bench_key()),
            _ => None,
        },
        ..GroupConfig::default()
    }
}

/// The group configuration of a path under `load`: [`group_config`], and
/// compression off if the load says so.
pub fn load_config(path: Path, load: &Load) -> GroupConfig {
    let config = group_config(path, load.window);
    GroupConfig {
        compress_above: config.compress_above.filter(|_| load.compress),
        ..config
    }
}

/// One member through actix-cpg: registers `sink-<index>`, waits for every
/// member's sink, then (if a sender) tells its own sink `count` blobs.
pub async fn actor_member<C: Connection>(
    conn: C,
    load: &Load,
    index: usize,
    config: GroupConfig,
    progress: &dyn Fn(u64),
) -> Result<Report, String> {
    let group = Group::start(conn, config)
        .await
        .map_err(|e| e.to_string())?;
    let tally = Rc::new(RefCell::new(Tally::new(load)));
    let sink = BenchSink {
        tally: tally.clone(),
    }
    .start();
    let name = format!("sink-{index}");
    let sender = index < load.senders;
    // Senders start once every member's sink was registered (so every
    // member is in the view and synced). Registrations are counted from
    // events as well as looked up: a quick member may be done, and its name
    // gone, before a slow one looks.
    let mut events = group.subscribe();
    let handlers = if load.shared {
        Handlers::new(sink).with::<SharedBlob>()
    } else {
        Handlers::new(sink).with::<Blob>()
    };
    group
        .register(&name, handlers)
        .await
        .map_err(|e| e.to_string())?;
    if sender {
        let mut seen: std::collections::BTreeSet<String> = group
            .names()
            .await
            .map_err(|e| e.to_string())?
            .into_iter()
            .map(|(n, _)| n)
            .collect();
        while (0..load.members).any(|i| !seen.contains(&format!("sink-{i}"))) {
            match events.recv().await {
                Ok(GroupEvent::NameRegistered { name, .. }) => {
                    seen.insert(name);
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return Err("the group closed before every sink was registered".into())
                }
            }
        }
    }
    drop(events);
    let target = group.remote::<Blob>(&name);
    let mut pacer = Pacer::new(load);
    let data_len = load.size.saturating_sub(BLOB_OVERHEAD);
    // Each message a different window of a larger pool: messages alike in
    // kind but not equal, or a batch of copies would compress as one.
    let pool = load.payload.bytes(data_len + PAYLOAD_POOL);
    let mut blob = Blob {
        seq: 0,
        ts: 0,
        data: pool[..data_len].to_vec(),
    };
    let mut start_ns = 0;
    let mut last_progress = Instant::now();
    // Counted from the group's start: the group is this run's own, and no
    // request travels before the first sender starts (a baseline taken
    // here could already include some of a faster member's messages).
    let before = group.metrics();
    let ready = stages::Ready::mark(before.requests);
    // The producer fills the send queue as fast as it can, and waits for
    // room when told WouldBlock: memory stays bounded by the queue.
    while sender && !pacer.done(blob.seq, load.count) {
        if let Some(at) = pacer.due(blob.seq) {
            tokio::time::sleep_until(at.into()).await;
        }
        blob.ts = mono_ns();
        match target.try_tell(&blob) {
            Ok(()) => {
                if blob.seq == 0 {
                    start_ns = wall_ns();
                }
                blob.seq += 1;
                let at = (blob.seq as usize).wrapping_mul(7919) % PAYLOAD_POOL;
                blob.data.copy_from_slice(&pool[at..at + data_len]);
            }
            Err(CallError::WouldBlock) => {
                group.ready_to_send().await.map_err(|e| e.to_string())?;
                pacer.sample_rss();
            }
            Err(e) => return Err(e.to_string()),
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            progress(group.metrics().requests);
            last_progress = Instant::now();
            pacer.sample_rss();
            // Let the runtime and the sink run on a paced producer too.
            tokio::task::yield_now().await;
        }
    }
    let sent = blob.seq;
    let goal = if load.duration.is_some() {
        None
    } else {
        Some(load.expected())
    };
    loop {
        let m = group.metrics();
        let requests = m.requests;
        let own = tally.borrow().own;
        let all_in = match goal {
            Some(goal) => requests >= goal,
            // Overload mode: the senders stopped at different counts.
            None => own >= sent,
        };
        if all_in && own >= sent {
            break;
        }
        if last_progress.elapsed() >= PROGRESS_EVERY {
            progress(requests);
            last_progress = Instant::now();
        }
        // Coarse on purpose: on a 2-core machine a 1 ms timer costs the
        // members' CPU that the daemons need; 5 ms is under 1% of a run.
        tokio::time::sleep(END_POLL).await;
    }
    let end_ns = wall_ns();
    let m = group.metrics();
    let run = ready.finish(m.requests);
    let _ = group.leave().await;
    let mut tally = tally.borrow_mut();
    if tally.out_of_order > 0 {
        return Err(format!(
            "{} of {} messages to sink-{index} arrived out of order",
            tally.out_of_order, tally.own
        ));
    }
    Ok(Report {
        index,
        sent,
        delivered: m.requests,
        start_ns,
        end_ns,
        latency: Latency::of(&mut tally.samples),
        peak_rss_kib: peak_rss_kib(),
        cpu_us: cpu_us(),
        pid: std::process::id(),
        try_again: m.try_again - before.try_again,
        multicasts: m.multicasts - before.multicasts,
        compressed: m.compressed_sent - before.compressed_sent,
        rss_samples: std::mem::take(&mut pacer.samples),
        run,
    })
}

#[cfg(feature = "corosync")]
mod raw_cpg {
    //! The raw binding: `rust_corosync::cpg` with nothing of actix-cpg in
    //! between; its fd is registered with tokio here, as the library's
    //! backend does for its own handles.

    use std::os::fd::{AsRawFd, RawFd};
    use std::sync::{Mutex, PoisonError};

    use rust_corosync::{cpg, CsError, DispatchFlags};
    use tokio::io::unix::AsyncFd;
    use tokio::io::Interest;

    use super::*;

    /// libcpg's IPC descriptor as tokio sees it. It does not own the fd:
    /// the cpg handle does, and closes it in `finalize`.
    struct IpcFd(RawFd);

    impl AsRawFd for IpcFd {
        fn as_raw_fd(&self) -> RawFd {
            self.0
        }
    }

    fn register(fd: RawFd) -> Result<AsyncFd<IpcFd>, String> {
        // SAFETY: `fd` is the open IPC socket of the cpg handle of
        // `member`, which finalizes it (closing the fd) only after the
        // returned AsyncFd is dropped; libcpg keeps the same fd until
        // then, and `IpcFd::as_raw_fd` always returns it.
        unsafe { AsyncFd::register_with_interest(IpcFd(fd), Interest::READABLE) }
            .map_err(|e| format!("cannot register the cpg fd with tokio: {e}"))
    }

    /// What the deliver callback needs: who this member is, its tally
    /// (raw: messages; floor: multicasts, the window's unit) and, on the
    /// floor, its actor and whether multicasts are batches.
    struct Listener {
        node: u32,
        pid: u32,
        tally: Tally,
        floor: Option<(Addr<FloorSink>, bool)>,
        /// Floor multicasts that did not split or decode (floor rule 4).
        refused: u64,
    }

    /// The callbacks are plain `fn`s: one raw member per process keeps
    /// its listener here.
    static TALLY: Mutex<Option<Listener>> = Mutex::new(None);

    fn with_tally<R>(f: impl FnOnce(&mut Tally) -> R) -> Option<R> {
        let mut guard = TALLY.lock().unwrap_or_else(PoisonError::into_inner);
        guard.as_mut().map(|l| f(&mut l.tally))
    }

    fn on_deliver(
        _: &cpg::Handle,
        _: String,
        nodeid: rust_corosync::NodeId,
        pid: u32,
        msg: &[u8],
        _: usize,
    ) {
        // Runs under rust-corosync's handle lock: no panics, no libcpg calls.
        let mut guard = TALLY.lock().unwrap_or_else(PoisonError::into_inner);
        let Some(l) = guard.as_mut() else { return };
        let own = u32::from(nodeid) == l.node && pid == l.pid;
        if let Some((sink, batching)) = &l.floor {
            l.tally.delivered += 1;
            if own {
                l.tally.own += 1;
            }
            let decoded = floor::for_each_blob(msg, *batching, |blob| {
                sink.do_send(FloorDelivery { own, blob })
            });
            if decoded.is_err() {
                l.refused += 1;
            }
            return;
        }
        let Some(at) = raw_sent_at(msg) else { return };
        l.tally.delivered += 1;
        if own {
            l.tally.own_delivered(Some(at));
        }
    }

    fn on_confchg(
        _: &cpg::Handle,
        _: &str,
        members: Vec<cpg::Address>,
        _: Vec<cpg::Address>,
        _: Vec<cpg::Address>,
    ) {
        // The largest view seen: one dispatch may bring the whole view,
        // the messages and the quick members' leaves at once.
        with_tally(|t| t.view = t.view.max(members.len()));
    }

    fn cs(op: &str, e: CsError) -> String {
        format!("{op}: {e}")
    }

    /// One raw member on the corosync daemon of this network namespace;
    /// with `floor` (whether batched), a member of the floor.
    pub async fn member(
        group: &str,
        load: &Load,
        index: usize,
        floor: Option<bool>,
        progress: &dyn Fn(u64),
    ) -> Result<Report, String> {
        let model = cpg::ModelData::ModelV1(cpg::Model1Data {
            flags: cpg::Model1Flags::None,
            deliver_fn: Some(on_deliver),
            confchg_fn: Some(on_confchg),
            totem_confchg_fn: None,
        });
        let handle = cpg::initialize(&model, 0).map_err(|e| cs("cpg_initialize", e))?;
        let node = cpg::local_get(&handle).map_err(|e| cs("cpg_local_get", e))?;
        let mut floor = floor.map(|batching| FloorSide::new(load, batching));
        *TALLY.lock().unwrap_or_else(PoisonError::into_inner) = Some(Listener {
            node: u32::from(node),
            pid: std::process::id(),
            tally: Tally::new(load),
            floor: floor.as_ref().map(|f| (f.sink.clone(), f.batching)),
            refused: 0,
        });
        let raw_fd = cpg::fd_get(&handle).map_err(|e| cs("cpg_fd_get", e))?;
        let result = {
            let fd = register(raw_fd)?;
            run(&handle, &fd, group, load, index, floor.as_mut(), progress).await
            // `fd` leaves the reactor here, before finalize closes it.
        };
        let _ = cpg::finalize(&handle);
        result
    }

    async fn run(
        handle: &cpg::Handle,
        fd: &AsyncFd<IpcFd>,
        group: &str,
        load: &Load,
        index: usize,
        mut floor: Option<&mut FloorSide>,
        progress: &dyn Fn(u64),
    ) -> Result<Report, String> {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match cpg::join(handle, group) {
                Ok(()) => break,
                Err(CsError::CsErrTryAgain) if Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(e) => return Err(cs("cpg_join", e)),
            }
        }
        let dispatch = || async {
            let mut guard = fd.readable().await.map_err(|e| e.to_string())?;
            cpg::dispatch(handle, DispatchFlags::All).map_err(|e| cs("cpg_dispatch", e))?;
            guard.clear_ready();
            Ok::<(), String>(())
        };
        // A dispatch on a timer as well as on readiness: a missed wakeup
        // must cost a run 100 ms, not its timeout.
        let sweep = || cpg::dispatch(handle, DispatchFlags::All).map_err(|e| cs("cpg_dispatch", e));
        while with_tally(|t| t.view).unwrap_or(0) < load.members {
            tokio::select! {
                r = dispatch() => r?,
                _ = tokio::time::sleep(SWEEP) => sweep()?,
            }
        }
        let ready = super::stages::Ready::mark(with_tally(|t| t.delivered).unwrap_or(0));
        let sender = index < load.senders;
        let mut pacer = Pacer::new(load);
        let mut buf = raw_buffer(load.size);
        let (mut sent, mut multicasts, mut try_again, mut start_ns) = (0u64, 0u64, 0u64, 0u64);
        let mut last_progress = Instant::now();
        loop {
            // Raw: messages; floor: multicasts (the callback's count), and
            // messages as the floor's actor handled them.
            let (delivered, own) = with_tally(|t| (t.delivered, t.own)).unwrap_or((0, 0));
            let own_multicasts = own;
            let (delivered, own) = match &floor {
                Some(side) => side.handled(),
                None => (delivered, own),
            };
            let mut blocked = false;
            let mut due = None;
            // The same window discipline as the group runtime: at most
            // `window` multicasts in flight until self-delivery.
            while sender
                && !pacer.done(sent, load.count)
                && multicasts - own_multicasts < load.window as u64
            {
                due = pacer.due(sent);
                if due.is_some() {
                    break;
                }
                let (bytes, n) =
                    next_multicast(floor.as_deref_mut(), &mut buf, sent, &pacer, load.count);
                match cpg::mcast_joined(handle, cpg::Guarantee::TypeAgreed, bytes) {
                    Ok(()) => {
                        if sent == 0 {
                            start_ns = wall_ns();
                        }
                        sent += n;
                        multicasts += 1;
                    }
                    Err(CsError::CsErrTryAgain) => {
                        try_again += 1;
                        blocked = true;
                        break;
                    }
                    Err(e) => return Err(cs("cpg_mcast_joined", e)),
                }
            }
            pacer.sample_rss();
            let finished_sending = !sender || pacer.done(sent, load.count);
            let all_in = load.duration.is_some() || delivered >= load.expected();
            if finished_sending && all_in && own >= sent {
                break;
            }
            if last_progress.elapsed() >= PROGRESS_EVERY {
                progress(delivered);
                last_progress = Instant::now();
            }
            let finished = finished_sending && floor.is_some();
            tokio::select! {
                r = dispatch() => r?,
                _ = tokio::time::sleep(SWEEP) => sweep()?,
                _ = tokio::time::sleep(Duration::from_millis(1)), if blocked => {}
                _ = tokio::time::sleep_until(due.unwrap_or_else(Instant::now).into()), if due.is_some() => {}
                // The floor's actor runs between dispatches; its progress
                // is looked at again soon.
                _ = tokio::time::sleep(Duration::from_millis(1)), if finished => {}
            }
        }
        let end_ns = wall_ns();
        let run = ready.finish(with_tally(|t| t.delivered).unwrap_or(0));
        let _ = cpg::leave(handle, group);
        let listener = TALLY.lock().unwrap_or_else(PoisonError::into_inner).take();
        let refused = listener.as_ref().map_or(0, |l| l.refused);
        if refused > 0 {
            return Err(format!("member {index} refused {refused} floor multicasts"));
        }
        let mut tally = match floor {
            Some(side) => side.handled.take(),
            None => listener.map(|l| l.tally).unwrap_or_default(),
        };
        if tally.out_of_order > 0 {
            return Err(format!(
                "{} of member {index}'s own messages came back out of order",
                tally.out_of_order
            ));
        }
        Ok(Report {
            index,
            sent,
            delivered: tally.delivered,
            start_ns,
            end_ns,
            latency: Latency::of(&mut tally.samples),
            peak_rss_kib: peak_rss_kib(),
            cpu_us: cpu_us(),
            pid: std::process::id(),
            try_again,
            multicasts,
            compressed: 0,
            rss_samples: pacer.samples,
            run,
        })
    }
}

// ---- child side --------------------------------------------------------------

fn parse_spec(spec: &str) -> Result<(Backend, Path, Load, usize, String), String> {
    let mut load = Load::unpaced(1024, 1000, 1, 1);
    let (mut backend, mut path, mut index, mut group) =
        (Backend::Sim, Path::Raw, 0usize, String::from("acpg-bench"));
    let num = |v: &str| v.parse::<f64>().map_err(|e| format!("{v:?}: {e}"));
    for word in spec.split_whitespace() {
        let (k, v) = word
            .split_once('=')
            .ok_or_else(|| format!("bad spec word {word:?}"))?;
        match k {
            "backend" => {
                backend = match v {
                    "sim" => Backend::Sim,
                    "corosync" => Backend::Corosync,
                    _ => return Err(format!("unknown backend {v:?}")),
                }
            }
            "path" => path = v.parse()?,
            "index" => index = num(v)? as usize,
            "group" => group = v.to_owned(),
            "size" => load.size = num(v)? as usize,
            "count" => load.count = num(v)? as u64,
            "members" => load.members = num(v)? as usize,
            "senders" => load.senders = num(v)? as usize,
            "rate" => load.rate = Some(num(v)?).filter(|r| *r > 0.0),
            "window" => load.window = num(v)? as usize,
            "duration" => {
                load.duration = Some(num(v)?)
                    .filter(|d| *d > 0.0)
                    .map(Duration::from_secs_f64)
            }
            "payload" => load.payload = v.parse()?,
            "compress" => load.compress = v == "1",
            "shared" => load.shared = v == "1",
            "stages" => load.stages = v == "1",
            _ => return Err(format!("unknown spec key {k:?}")),
        }
    }
    Ok((backend, path, load, index, group))
}

/// If this process was started as a bench member (the [`CHILD_ENV`]
/// variable is set), runs it and returns the exit code; `None` otherwise.
/// Call first thing in `main` of a bench executable.
pub fn child_main() -> Option<i32> {
    let spec = std::env::var(CHILD_ENV).ok()?;
    let _ = *EPOCH;
    let (backend, path, load, index, group) = match parse_spec(&spec) {
        Ok(parsed) => parsed,
        Err(e) => {
            println!("ERROR {e}");
            return Some(2);
        }
    };
    if load.stages {
        actix_cpg::stages::enable();
    }
    let progress = |n: u64| println!("PROGRESS {n}");
    let outcome: Result<Vec<Report>, String> = actix::System::new().block_on(async move {
        match backend {
            Backend::Sim => sim_members(path, &load, &group, &progress).await,
            Backend::Corosync => corosync_member(path, &load, index, &group, &progress)
                .await
                .map(|r| vec![r]),
        }
    });
    match outcome {
        Ok(reports) => {
            for r in reports {
                println!("{}", r.to_line());
            }
            Some(0)
        }
        Err(e) => {
            println!("ERROR {e}");
            Some(1)
        }
    }
}

async fn sim_members(
    path: Path,
    load: &Load,
    group: &str,
    progress: &dyn Fn(u64),
) -> Result<Vec<Report>, String> {
    // No atomic limit to speak of: the sim's raw path has no fragmentation
    // of its own, and large loads measure it whole (the actor path still
    // sends its pieces of `GroupConfig::chunk_size`).
    let cluster = SimCluster::builder(load.members.max(1) as u32)
        .max_message_size(64 << 20)
        .build();
    let name = GroupName::new(group).map_err(|e| e.to_string())?;
    let mut conns = Vec::new();
    for i in 0..load.members {
        let conn = cluster
            .process(NodeId(i as u32 + 1))
            .map_err(|e| e.to_string())?
            .join(&name)
            .map_err(|e| e.to_string())?;
        conns.push(conn);
    }
    // Only member 0 reports progress: one line per member would interleave.
    let quiet = |_: u64| {};
    let runs = conns.into_iter().enumerate().map(|(i, conn)| {
        let progress: &dyn Fn(u64) = if i == 0 { progress } else { &quiet };
        async move {
            match path {
                Path::Raw => raw_member(conn, load, i, progress).await,
                Path::Floor { batching } => floor_member(conn, load, i, batching, progress).await,
                Path::Actor { .. } => {
                    actor_member(conn, load, i, load_config(path, load), progress).await
                }
            }
        }
    });
    futures::future::join_all(runs).await.into_iter().collect()
}

#[cfg(feature = "corosync")]
async fn corosync_member(
    path: Path,
    load: &Load,
    index: usize,
    group: &str,
    progress: &dyn Fn(u64),
) -> Result<Report, String> {
    use actix_cpg::transport::corosync::Corosync;
    match path {
        Path::Raw => raw_cpg::member(group, load, index, None, progress).await,
        Path::Floor { batching } => {
            raw_cpg::member(group, load, index, Some(batching), progress).await
        }
        Path::Actor { .. } => {
            let name = GroupName::new(group).map_err(|e| e.to_string())?;
            let conn = Corosync::new()
                .track_quorum(false)
                .join(&name)
                .map_err(|e| e.to_string())?;
            actor_member(conn, load, index, load_config(path, load), progress).await
        }
    }
}

#[cfg(not(feature = "corosync"))]
async fn corosync_member(
    _: Path,
    _: &Load,
    _: usize,
    _: &str,
    _: &dyn Fn(u64),
) -> Result<Report, String> {
    Err("built without the `corosync` feature".into())
}

// ---- orchestrator side -------------------------------------------------------

/// One measured case.
#[derive(Debug, Clone, PartialEq)]
pub struct Case {
    /// Where the members run.
    pub backend: Backend,
    /// What carries the messages.
    pub path: Path,
    /// The load.
    pub load: Load,
}

/// What a case measured, over all its members.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Outcome {
    /// Seconds from the first send to the last member's last delivery.
    pub secs: f64,
    /// Messages per second delivered to every member.
    pub msgs_per_s: f64,
    /// Megabytes (10^6 B of message size) per second delivered to every
    /// member.
    pub mb_per_s: f64,
    /// Latency measured by the first sender.
    pub latency: Option<Latency>,
    /// Largest peak RSS of any member process, KiB.
    pub peak_rss_kib: u64,
    /// CPU time of every member process (user and system) per message
    /// sent, µs: what one message costs the sender and all receivers,
    /// daemons not counted.
    pub cpu_us_per_msg: f64,
    /// `TRY_AGAIN`s met by all senders.
    pub try_again: u64,
    /// Messages per multicast, over all senders.
    pub per_multicast: f64,
    /// Multicasts that went compressed, over all senders.
    pub compressed: u64,
    /// Every member's report.
    pub reports: Vec<Report>,
}

impl Outcome {
    fn of(load: &Load, reports: Vec<Report>) -> Result<Outcome, String> {
        let start = reports
            .iter()
            .filter(|r| r.sent > 0)
            .map(|r| r.start_ns)
            .min()
            .ok_or("no member sent anything")?;
        let end = reports.iter().map(|r| r.end_ns).max().unwrap_or(start);
        let secs = (end.saturating_sub(start) as f64 / 1e9).max(1e-9);
        let total: u64 = reports.iter().map(|r| r.sent).sum();
        for r in &reports {
            if load.duration.is_none() && r.delivered < load.expected() {
                return Err(format!(
                    "member {} got {} of {} messages",
                    r.index,
                    r.delivered,
                    load.expected()
                ));
            }
        }
        let multicasts: u64 = reports.iter().map(|r| r.multicasts).sum();
        Ok(Outcome {
            secs,
            msgs_per_s: total as f64 / secs,
            mb_per_s: total as f64 * load.size as f64 / secs / 1e6,
            latency: reports
                .iter()
                .find(|r| r.index == 0)
                .and_then(|r| r.latency),
            peak_rss_kib: reports.iter().map(|r| r.peak_rss_kib).max().unwrap_or(0),
            cpu_us_per_msg: {
                // One process may hold several members (the sim): count
                // each process once, at its largest reading.
                let mut by_pid = std::collections::BTreeMap::new();
                for r in &reports {
                    let e = by_pid.entry(r.pid).or_insert(0u64);
                    *e = (*e).max(r.cpu_us);
                }
                by_pid.values().sum::<u64>() as f64 / total.max(1) as f64
            },
            try_again: reports.iter().map(|r| r.try_again).sum(),
            per_multicast: total as f64 / multicasts.max(1) as f64,
            compressed: reports.iter().map(|r| r.compressed).sum(),
            reports,
        })
    }
}

/// knet's crypto between the nodes of the test cluster (`ACPG_CRYPTO` of
/// `scripts/cluster.sh`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Crypto {
    /// `crypto_cipher: aes256`, `crypto_hash: sha256` (the script's default).
    Aes256,
    /// No encryption or authentication between the nodes.
    None,
}

impl Crypto {
    /// The value `scripts/cluster.sh` takes in `ACPG_CRYPTO` and records.
    pub fn as_str(self) -> &'static str {
        match self {
            Crypto::Aes256 => "aes256",
            Crypto::None => "none",
        }
    }
}

impl fmt::Display for Crypto {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Crypto::Aes256 => "knet aes256+sha256",
            Crypto::None => "knet no crypto",
        })
    }
}

/// Copies each node's corosync log (`NODE/corosync.log` under the test
/// cluster's directory `from`) to `to` as `NODE-corosync.log`, so that a
/// stalled case's evidence outlives the cluster, which the bench takes
/// down or resizes; the number of logs copied.
fn keep_daemon_logs(from: &std::path::Path, to: &std::path::Path) -> std::io::Result<usize> {
    std::fs::create_dir_all(to)?;
    let mut kept = 0;
    for entry in std::fs::read_dir(from)? {
        let node = entry?.path();
        let log = node.join("corosync.log");
        if let (Some(name), true) = (node.file_name(), log.is_file()) {
            let mut target = name.to_os_string();
            target.push("-corosync.log");
            std::fs::copy(&log, to.join(target))?;
            kept += 1;
        }
    }
    Ok(kept)
}

fn cluster_dir() -> String {
    std::env::var("ACPG_CLUSTER_DIR").unwrap_or_else(|_| "/tmp/actix-cpg-cluster".into())
}

/// The number of nodes of the test cluster, as `scripts/cluster.sh up`
/// recorded it (3 for a cluster of a script that did not record it);
/// `None` if there is no cluster state.
pub fn cluster_nodes() -> Option<usize> {
    let dir = cluster_dir();
    match std::fs::read_to_string(format!("{dir}/nodes")) {
        Ok(n) => n.trim().parse().ok(),
        Err(_) => std::path::Path::new(&format!("{dir}/n1"))
            .exists()
            .then_some(3),
    }
}

/// The crypto setting the running test cluster was started with, as
/// `scripts/cluster.sh` recorded it; `None` if it cannot tell.
pub fn cluster_crypto() -> Option<Crypto> {
    let dir = cluster_dir();
    let recorded = std::fs::read_to_string(format!("{dir}/crypto")).ok()?;
    match recorded.trim() {
        "aes256" => Some(Crypto::Aes256),
        "none" => Some(Crypto::None),
        _ => None,
    }
}

/// Stops the test cluster and starts it again with `crypto` and `nodes`
/// nodes, unless it already runs so. The caller holds the cluster lock
/// (`flock /tmp/acpg-cluster.lock`) for the whole bench: taking it here
/// would wait for the caller's own lock forever.
pub fn restart_cluster(crypto: Crypto, nodes: usize) -> Result<(), String> {
    if cluster_crypto() == Some(crypto) && cluster_nodes() == Some(nodes) && cluster_up().is_ok() {
        return Ok(());
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/../scripts/cluster.sh");
    for command in ["down", "up"] {
        // The script's log goes to stderr with the bench's progress; its
        // stdout (views) would mix with the tables.
        let status = Command::new("bash")
            .arg(script)
            .arg(command)
            .env("ACPG_CRYPTO", crypto.as_str())
            .env("ACPG_NODES", nodes.to_string())
            .stdout(Stdio::null())
            .status()
            .map_err(|e| format!("cannot run {script}: {e}"))?;
        if !status.success() {
            return Err(format!(
                "`{script} {command}` with ACPG_CRYPTO={crypto:?} ACPG_NODES={nodes} failed"
            ));
        }
    }
    match (cluster_crypto(), cluster_nodes()) {
        (Some(c), Some(n)) if c == crypto && n == nodes => cluster_up(),
        other => Err(format!(
            "the cluster came up with (crypto, nodes) {other:?}, not ({crypto:?}, {nodes})"
        )),
    }
}

/// Whether the real test cluster is up: node namespaces exist and node 1's
/// daemon answers. The reason it is not, otherwise.
pub fn cluster_up() -> Result<(), String> {
    for n in 1..=cluster_nodes().unwrap_or(3) {
        if !std::path::Path::new(&format!("/run/netns/acpg-n{n}")).exists() {
            return Err(format!(
                "namespace acpg-n{n} does not exist (start the cluster with `bash scripts/cluster.sh up`)"
            ));
        }
    }
    let status = Command::new("ip")
        .args(["netns", "exec", "acpg-n1", "corosync-cpgtool"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .map_err(|e| format!("cannot run `ip netns exec`: {e}"))?;
    if !status.success() {
        return Err("node 1's corosync daemon does not answer (is the cluster up?)".into());
    }
    Ok(())
}

fn unique_group() -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    format!(
        "acpg-bench-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    )
}

struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for c in &mut self.0 {
            if let Ok(None) = c.try_wait() {
                let _ = c.kill();
            }
            let _ = c.wait();
        }
    }
}

/// Runs `case` with member processes of the executable `exe` (which must
/// call [`child_main`] first thing). `progress(delivered, expected)` is
/// called as the slowest reporting member advances.
pub fn run_case(
    case: &Case,
    exe: &std::path::Path,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<Outcome, String> {
    let load = &case.load;
    if load.size < BLOB_OVERHEAD {
        return Err(format!(
            "message size must be at least {BLOB_OVERHEAD} bytes"
        ));
    }
    if load.duration.is_some() && load.senders != load.members {
        return Err("the overload mode needs every member to send".into());
    }
    let group = unique_group();
    let backend = match case.backend {
        Backend::Sim => "sim",
        Backend::Corosync => "corosync",
    };
    let spec = |index: usize| {
        format!(
            "backend={backend} path={} index={index} group={group} {}",
            case.path,
            load.to_spec()
        )
    };
    let mut children = Children(Vec::new());
    let procs = match case.backend {
        Backend::Sim => 1,
        Backend::Corosync => load.members,
    };
    let (tx, rx) = std::sync::mpsc::channel::<(usize, String)>();
    for i in 0..procs {
        let mut cmd = match case.backend {
            Backend::Sim => Command::new(exe),
            Backend::Corosync => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &format!("acpg-n{}", i + 1)])
                    .arg(exe);
                c
            }
        };
        cmd.env(CHILD_ENV, spec(i))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        let mut child = cmd
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", exe.display()))?;
        let stdout = child.stdout.take().ok_or("no stdout")?;
        children.0.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if tx.send((i, line)).is_err() {
                    break;
                }
            }
        });
    }
    drop(tx);
    let deadline = Instant::now() + CASE_TIMEOUT + load.duration.unwrap_or_default();
    let mut reports = Vec::new();
    let mut seen = vec![0u64; procs];
    let mut errors = VecDeque::new();
    let expected_reports = load.members;
    while reports.len() < expected_reports {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok((i, line)) => {
                if let Some(n) = line.strip_prefix("PROGRESS ") {
                    seen[i] = n.trim().parse().unwrap_or(seen[i]);
                    progress(seen.iter().copied().min().unwrap_or(0), load.expected());
                } else if let Some(r) = Report::parse(&line) {
                    seen[i] = r.delivered;
                    reports.push(r);
                } else if line.starts_with("ERROR") {
                    errors.push_back(format!("member {i}: {line}"));
                    break;
                }
            }
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                let logs = match case.backend {
                    Backend::Sim => String::new(),
                    Backend::Corosync => {
                        let to = std::env::temp_dir().join(format!("acpg-bench-stall-{group}"));
                        match keep_daemon_logs(std::path::Path::new(&cluster_dir()), &to) {
                            Ok(n) => format!("; {n} daemon log(s) kept in {}", to.display()),
                            Err(e) => format!("; the daemons' logs were not kept: {e}"),
                        }
                    }
                };
                return Err(format!(
                    "timed out after {CASE_TIMEOUT:?}; members had {seen:?} of {}{logs}",
                    load.expected()
                ));
            }
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => break,
        }
    }
    if let Some(e) = errors.pop_front() {
        return Err(e);
    }
    if reports.len() < expected_reports {
        return Err(format!(
            "only {} of {expected_reports} members reported",
            reports.len()
        ));
    }
    drop(children);
    Outcome::of(load, reports)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stalled_case_keeps_every_nodes_daemon_log() {
        let base = std::env::temp_dir().join(format!("acpg-keep-logs-{}", std::process::id()));
        let (cluster, kept) = (base.join("cluster"), base.join("kept"));
        for node in ["n1", "n2"] {
            std::fs::create_dir_all(cluster.join(node)).expect("node dir");
            std::fs::write(cluster.join(node).join("corosync.log"), node).expect("log");
        }
        std::fs::write(cluster.join("authkey"), "not a node").expect("file");
        std::fs::create_dir_all(cluster.join("n3")).expect("a node without a log");
        assert_eq!(keep_daemon_logs(&cluster, &kept).expect("kept"), 2);
        assert_eq!(
            std::fs::read_to_string(kept.join("n2-corosync.log")).expect("read"),
            "n2"
        );
        assert!(keep_daemon_logs(&base.join("none"), &kept).is_err());
        std::fs::remove_dir_all(&base).expect("clean up");
    }

    #[test]
    fn reports_survive_their_line() {
        let r = Report {
            index: 2,
            sent: 10,
            delivered: 30,
            start_ns: 5,
            end_ns: 99,
            latency: Some(Latency {
                samples: 10,
                p50_us: 1.5,
                p99_us: 20.0,
                p999_us: 30.25,
            }),
            peak_rss_kib: 1234,
            cpu_us: 56_780_000,
            pid: 4321,
            try_again: 1,
            multicasts: 3,
            compressed: 2,
            rss_samples: vec![(0, 100), (1, 120)],
            run: stages::StageReport {
                user_us: 3_000,
                sys_us: 9_000,
                minflt: 12,
                msgs: 1_000,
                timer_ns: 48.5,
                totals: vec![(
                    actix_cpg::stages::Stage::Decode,
                    actix_cpg::stages::StageTotal {
                        times: 1_000,
                        nanos: 300_000,
                        cpu_nanos: 250_000,
                        sampled: 16,
                    },
                )],
            },
        };
        assert_eq!(Report::parse(&r.to_line()), Some(r));
        assert_eq!(Report::parse("PROGRESS 5"), None);
    }

    #[test]
    fn percentiles_pick_the_right_sample() {
        let mut samples: Vec<u64> = (1..=1000).map(|n| n * 1000).collect();
        let l = Latency::of(&mut samples).unwrap();
        assert_eq!((l.p50_us, l.p99_us, l.p999_us), (500.0, 990.0, 999.0));
        assert_eq!(Latency::of(&mut []), None);
    }

    #[test]
    fn specs_round_trip() {
        let load = Load {
            size: 64,
            count: 7,
            members: 3,
            senders: 3,
            rate: Some(1000.0),
            window: 16,
            duration: Some(Duration::from_secs(2)),
            payload: Payload::Json,
            compress: false,
            shared: false,
            stages: false,
        };
        let spec = format!(
            "backend=corosync path=actor+batch index=1 group=g {}",
            load.to_spec()
        );
        let (backend, path, parsed, index, group) = parse_spec(&spec).unwrap();
        assert_eq!(backend, Backend::Corosync);
        assert_eq!(
            path,
            Path::Actor {
                batching: true,
                keyed: false
            }
        );
        for name in [
            "raw",
            "floor",
            "floor+batch",
            "actor",
            "actor+batch",
            "actor+key",
            "actor+batch+key",
        ] {
            let path: Path = name.parse().unwrap();
            assert_eq!(path.to_string(), name);
            let keyed = group_config(path, 8).key.is_some();
            assert_eq!(keyed, name.ends_with("+key"), "{name}");
        }
        assert_eq!((parsed, index, group.as_str()), (load, 1, "g"));
    }

    #[test]
    fn raw_messages_carry_their_send_time() {
        let mut buf = raw_buffer(64);
        encode_raw(&mut buf, 3);
        assert!(raw_sent_at(&buf).is_some());
        assert_eq!(raw_sent_at(b"BNC"), None);
        assert_eq!(raw_sent_at(b"XXXXaaaaaaaaaaaaaaaaaaaa"), None);
    }

    #[actix_rt::test]
    async fn every_path_delivers_a_small_load_on_the_sim() {
        let load = Load {
            size: 64,
            count: 300,
            members: 3,
            senders: 3,
            rate: None,
            window: 8,
            duration: None,
            payload: Payload::Random,
            compress: true,
            shared: false,
            stages: false,
        };
        for path in [
            Path::Raw,
            Path::Floor { batching: false },
            Path::Floor { batching: true },
            Path::Actor {
                batching: false,
                keyed: false,
            },
            Path::Actor {
                batching: true,
                keyed: false,
            },
            Path::Actor {
                batching: false,
                keyed: true,
            },
            Path::Actor {
                batching: true,
                keyed: true,
            },
        ] {
            let reports = sim_members(path, &load, "bench-unit", &|_| {})
                .await
                .unwrap();
            let outcome = Outcome::of(&load, reports).unwrap();
            assert!(outcome.msgs_per_s > 0.0, "{path}");
            assert!(outcome.latency.is_some(), "{path}");
            if path
                == (Path::Actor {
                    batching: true,
                    keyed: false,
                })
            {
                assert!(outcome.per_multicast >= 1.0);
            }
            if path == (Path::Floor { batching: true }) {
                assert!(outcome.per_multicast > 1.0, "{path}: {outcome:?}");
            }
        }
    }
}
