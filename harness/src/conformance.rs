//! The conformance agent: one group member driven by text lines.
//!
//! The conformance suite (`tests/conformance.rs`) runs the same scenarios
//! on both backends. On the `sim` backend each agent is a task in the test
//! process, fed through channels; on the real cluster each agent is a
//! `cpg-agent` process in one node's network namespace, fed through its
//! stdin and stdout. The scenarios only see lines, so they are the same code
//! for both.
//!
//! Commands (one per line) and what the agent prints back:
//!
//! ```text
//!  any mode   leave                 LEFT   (after SHOW ... with --show)
//!             metrics               METRICS delivered=N dropped=N try_again=N
//!                                   (group mode adds chunked=N resent=N stray=N
//!                                   version=V refused=N)
//!  raw        send N                SENT N          (N messages, TRY_AGAIN retried)
//!             digest                DIGEST count hash   (of every delivery so far)
//!             garbage N             SENT N          (N non-actix-cpg payloads)
//!             mcast HEX             SENT 1          (these bytes, as they are: forgeries)
//!  group      register NAME         REGISTER NAME ok | REGISTER NAME taken OWNER
//!             call NAME TEXT        CALL NAME ok TEXT | CALL NAME err ERROR
//!             burst NAME N          BURST NAME N    (N ordered tells, all sent)
//!             bulk NAME N BYTES     BULK NAME N     (N ordered tells of BYTES each)
//!             sink                  SINK count in_order
//!             names                 NAMES a=node1/7,b=node2/9   (sorted)
//!             tree                  TREE ok | TREE err ERROR   (start the test tree)
//!             show                  SHOW {inspect() as JSON}   (see `crate::observe`)
//!             (a child starts/stops) CHILD-UP name incarnation | CHILD-DOWN name incarnation
//!             (a name is registered) NAME-UP name host
//!             (a process is refused) REFUSED member versions vG
//!             (the version moves)   VERSION v
//!  always     (on start)            READY node/pid
//!             (on each confchg)     CONFCHG members=a,b joined=a:Join left=b:ProcDown
//! ```

use std::cell::RefCell;
use std::collections::{HashMap, VecDeque};
use std::rc::Rc;
use std::time::Duration;

use actix::prelude::*;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

use crate::observe::Observe;

use actix_cpg::supervisor::{
    ChildSpec, QuorumPolicy, RestartType, Strategy, SupervisorSpec, TreeSpec,
};
use actix_cpg::transport::{
    Connection, GroupName, Member, MemberChange, Transport, TransportError, TransportEvent,
};
use actix_cpg::wire::Versions;
use actix_cpg::{
    BatchConfig, Child, ChildContext, Factories, Group, GroupConfig, GroupError, GroupEvent,
    Handlers, RemoteMessage, Terminate,
};

/// Tells a burst keeps queued before awaiting the oldest.
const BURST_PIPELINE: usize = 256;
/// The same for the large messages of a bulk.
const BULK_PIPELINE: usize = 4;

/// Awaits `tells` in call order, keeping up to `depth` of them queued (each
/// is queued in the order when it is made), and stops at the first error.
async fn pipelined<F, E>(tells: impl Iterator<Item = F>, depth: usize) -> Result<(), E>
where
    F: std::future::Future<Output = Result<(), E>>,
{
    let mut pending = VecDeque::new();
    for tell in tells {
        pending.push_back(tell);
        if pending.len() >= depth {
            if let Some(oldest) = pending.pop_front() {
                oldest.await?;
            }
        }
    }
    for tell in pending {
        tell.await?;
    }
    Ok(())
}

/// Messages a raw agent keeps in flight (sent, not yet delivered back).
const RAW_WINDOW: u64 = 64;

/// How an agent uses its connection.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Straight on the transport: bytes, no envelope (a plain CPG client).
    Raw,
    /// Through the group runtime: registry and remote calls.
    Group,
    /// The same, as a build speaking these protocol versions (for rolling
    /// upgrades: `GroupConfig::protocol_versions`).
    GroupSpeaking(Versions),
}

/// Asks the agent's `echo` actor to answer with the same text.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "String")]
pub struct Echo(pub String);

impl RemoteMessage for Echo {
    const TYPE_TAG: &'static str = "actix-cpg.testing.Echo";
}

/// One numbered message of a burst; the sink checks the numbers ascend.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Seq {
    /// The sending member.
    pub from: Member,
    /// 0, 1, 2, … per sender.
    pub n: u64,
}

impl RemoteMessage for Seq {
    const TYPE_TAG: &'static str = "actix-cpg.testing.Seq";
}

/// One numbered large message of a bulk: the sink checks the numbers
/// ascend and the bytes are those sent.
#[derive(Message, Serialize, Deserialize, Debug)]
#[rtype(result = "()")]
pub struct Bulk {
    /// The sending member.
    pub from: Member,
    /// 0, 1, 2, … per sender.
    pub n: u64,
    /// [`Bulk::pattern`] of some length.
    #[serde(with = "actix_cpg::wire::bytes")]
    pub data: Vec<u8>,
}

impl RemoteMessage for Bulk {
    const TYPE_TAG: &'static str = "actix-cpg.testing.Bulk";
}

impl Bulk {
    /// The bytes message `n` carries: a pattern the sink can check.
    pub fn pattern(n: u64, len: usize) -> Vec<u8> {
        (0..len as u64)
            .map(|i| (i.wrapping_mul(31) ^ n) as u8)
            .collect()
    }
}

#[derive(Default)]
struct SinkStats {
    count: u64,
    in_order: bool,
    next: HashMap<Member, u64>,
}

struct Endpoint {
    stats: Rc<RefCell<SinkStats>>,
}

impl Actor for Endpoint {
    type Context = Context<Self>;
}

impl Handler<Echo> for Endpoint {
    type Result = String;
    fn handle(&mut self, Echo(text): Echo, _: &mut Context<Self>) -> String {
        text
    }
}

impl Handler<Seq> for Endpoint {
    type Result = ();
    fn handle(&mut self, seq: Seq, _: &mut Context<Self>) {
        self.stats.borrow_mut().take(seq.from, seq.n, true);
    }
}

impl Handler<Bulk> for Endpoint {
    type Result = ();
    fn handle(&mut self, bulk: Bulk, _: &mut Context<Self>) {
        let intact = bulk.data == Bulk::pattern(bulk.n, bulk.data.len());
        self.stats.borrow_mut().take(bulk.from, bulk.n, intact);
    }
}

impl SinkStats {
    fn take(&mut self, from: Member, n: u64, intact: bool) {
        let expected = self.next.entry(from).or_insert(0);
        let ok = n == *expected && intact;
        *expected = n + 1;
        self.in_order &= ok;
        self.count += 1;
    }
}

fn member_list(members: &[Member]) -> String {
    members
        .iter()
        .map(Member::to_string)
        .collect::<Vec<_>>()
        .join(",")
}

fn change_list(changes: &[MemberChange]) -> String {
    changes
        .iter()
        .map(|c| format!("{}:{:?}", c.member, c.reason))
        .collect::<Vec<_>>()
        .join(",")
}

/// The line printed for a confchg.
pub fn confchg_line(members: &[Member], joined: &[MemberChange], left: &[MemberChange]) -> String {
    format!(
        "CONFCHG members={} joined={} left={}",
        member_list(members),
        change_list(joined),
        change_list(left)
    )
}

/// Runs one agent until `leave` or the end of its input. Must run inside an
/// actix system (group mode starts actors).
pub async fn run<C: Connection>(
    conn: C,
    mode: Mode,
    input: UnboundedReceiver<String>,
    output: UnboundedSender<String>,
) {
    run_observed(conn, mode, Observe::default(), input, output).await
}

/// [`run`], with the agent's `--record FILE` and `--show` (group mode
/// only: a raw agent has no runtime to record or show, and says `ERROR`).
pub async fn run_observed<C: Connection>(
    conn: C,
    mode: Mode,
    observe: Observe,
    input: UnboundedReceiver<String>,
    output: UnboundedSender<String>,
) {
    match mode {
        Mode::Raw if observe != Observe::default() => {
            let _ = output.send("ERROR a raw agent records and shows nothing".into());
        }
        Mode::Raw => run_raw(conn, input, output).await,
        Mode::Group | Mode::GroupSpeaking(_) => {
            let versions = match mode {
                Mode::GroupSpeaking(v) => v,
                _ => Versions::this_build(),
            };
            if let Err(e) = run_group(conn, versions, observe, input, output.clone()).await {
                let _ = output.send(format!("ERROR {e}"));
            }
        }
    }
}

/// FNV-1a (64 bit) over (node, pid, bytes) of every delivery in order, the
/// integers little-endian: the conformance suite computes the same value
/// on its own to check a raw agent's `digest`.
struct Digest {
    count: u64,
    hash: u64,
}

impl Digest {
    fn new() -> Self {
        Digest {
            count: 0,
            hash: 0xcbf2_9ce4_8422_2325,
        }
    }

    fn add(&mut self, from: Member, bytes: &[u8]) {
        let head = from.node.0.to_le_bytes().into_iter();
        let head = head.chain(from.pid.to_le_bytes());
        for b in head.chain(bytes.iter().copied()) {
            self.hash ^= u64::from(b);
            self.hash = self.hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
        self.count += 1;
    }
}

async fn run_raw<C: Connection>(
    mut conn: C,
    mut input: UnboundedReceiver<String>,
    output: UnboundedSender<String>,
) {
    let say = |line: String| {
        let _ = output.send(line);
    };
    let local = conn.local();
    let mut digest = Digest::new();
    let mut ready = false;
    let mut outbound: VecDeque<Vec<u8>> = VecDeque::new();
    let mut sent_report: VecDeque<(usize, u64)> = VecDeque::new();
    let mut sent_total = 0u64;
    let mut try_again = 0u64;
    let mut next_seq = 0u64;
    let mut input_open = true;
    let mut own_delivered = 0u64;
    loop {
        // Send what we can; stop at TRY_AGAIN and retry after dispatching.
        // Like the group runtime, keep at most RAW_WINDOW messages in flight
        // so the daemon never queues without bound.
        while let Some(bytes) = outbound.front() {
            if sent_total - own_delivered >= RAW_WINDOW {
                break;
            }
            match conn.mcast(bytes) {
                Ok(()) => {
                    outbound.pop_front();
                    sent_total += 1;
                }
                Err(TransportError::TryAgain) => {
                    try_again += 1;
                    break;
                }
                Err(e) => {
                    say(format!("ERROR {e}"));
                    return;
                }
            }
        }
        while let Some((n, at)) = sent_report.front() {
            if sent_total >= *at {
                say(format!("SENT {n}"));
                sent_report.pop_front();
            } else {
                break;
            }
        }
        let blocked = !outbound.is_empty() && sent_total - own_delivered < RAW_WINDOW;
        tokio::select! {
            event = actix_cpg::transport::next_event(&mut conn) => match event {
                Ok(TransportEvent::Deliver { from, bytes }) => {
                    if from == local {
                        own_delivered += 1;
                    }
                    digest.add(from, &bytes);
                }
                Ok(TransportEvent::ConfChg { members, joined, left }) => {
                    if !ready && members.contains(&local) {
                        ready = true;
                        say(format!("READY {local}"));
                    }
                    say(confchg_line(&members, &joined, &left));
                }
                Ok(_) => {}
                Err(e) => {
                    say(format!("CLOSED {e}"));
                    return;
                }
            },
            _ = tokio::time::sleep(Duration::from_millis(1)), if blocked => {}
            line = input.recv(), if input_open => {
                let Some(line) = line else {
                    input_open = false;
                    continue;
                };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["send", n] => {
                        let n: usize = n.parse().unwrap_or(0);
                        for _ in 0..n {
                            outbound.push_back(format!("{local}#{next_seq}").into_bytes());
                            next_seq += 1;
                        }
                        sent_report.push_back((n, sent_total + outbound.len() as u64));
                    }
                    ["garbage", n] => {
                        let n: usize = n.parse().unwrap_or(0);
                        for i in 0..n {
                            // Some look almost right: magic, then a bad version or body.
                            let bytes = match i % 3 {
                                0 => vec![0xde, 0xad, 0xbe, 0xef, i as u8],
                                1 => b"ACPG\x63\x01\0\0garbage".to_vec(),
                                _ => b"ACPG\x02\x02\0\0\xff\xff\xff\xff\xff\xff\xff\x7f".to_vec(),
                            };
                            outbound.push_back(bytes);
                        }
                        sent_report.push_back((n, sent_total + outbound.len() as u64));
                    }
                    ["mcast", hex] => match decode_hex(hex) {
                        // Any bytes at all: a plain client forging messages.
                        Some(bytes) => {
                            outbound.push_back(bytes);
                            sent_report.push_back((1, sent_total + outbound.len() as u64));
                        }
                        None => say(format!("ERROR not hex: {hex:?}")),
                    },
                    ["digest"] => say(format!("DIGEST {} {:016x}", digest.count, digest.hash)),
                    ["metrics"] => say(format!("METRICS delivered={} dropped=0 try_again={try_again}", digest.count)),
                    ["leave"] => {
                        let _ = conn.leave();
                        say("LEFT".into());
                        return;
                    }
                    _ => say(format!("ERROR unknown command {line:?}")),
                }
            }
        }
        if !input_open && outbound.is_empty() {
            return;
        }
    }
}

/// Bytes from their lowercase or uppercase hex digits; `None` if any pair
/// is not hex.
pub fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    if !hex.len().is_multiple_of(2) {
        return None;
    }
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The hex digits of `bytes`, for a raw agent's `mcast` command.
pub fn encode_hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

async fn run_group<C: Connection>(
    conn: C,
    versions: Versions,
    observe: Observe,
    mut input: UnboundedReceiver<String>,
    output: UnboundedSender<String>,
) -> Result<(), GroupError> {
    // One message per multicast: the burst scenario is there to push the
    // unbatched path into TRY_AGAIN on the sim (batching would pack a
    // pipelined burst into a few multicasts and never meet it). Batching
    // has its own suite (tests/sim_batching.rs), and the bench smoke checks
    // its order on the real cluster.
    //
    // Pieces of 32 KiB: a 4 MB message of the bulk scenario is more pieces
    // than the send window holds, so it spans several round trips and a
    // membership change can fall between its pieces on a real cluster too.
    let config = GroupConfig {
        batch: BatchConfig::disabled(),
        chunk_size: 32 << 10,
        protocol_versions: versions,
        record_to: observe.record.clone(),
        ..GroupConfig::default()
    };
    let group = Group::start(conn, config).await?;
    let mut events = group.subscribe();
    let say = {
        let output = output.clone();
        move |line: String| {
            let _ = output.send(line);
        }
    };
    say(format!("READY {}", group.local()));
    let members = group.members().await?;
    say(confchg_line(&members, &[], &[]));
    let stats = Rc::new(RefCell::new(SinkStats {
        in_order: true,
        ..SinkStats::default()
    }));
    loop {
        tokio::select! {
            event = events.recv() => match event {
                Ok(GroupEvent::ViewChanged { members, joined, left }) => {
                    say(confchg_line(&members, &joined, &left));
                }
                Ok(GroupEvent::NameRegistered { name, host }) => {
                    say(format!("NAME-UP {name} {host}"));
                }
                Ok(GroupEvent::MemberRefused { member, versions, group_version }) => {
                    say(format!("REFUSED {member} {versions} v{group_version}"));
                }
                Ok(GroupEvent::VersionChanged { to, .. }) => say(format!("VERSION {to}")),
                Ok(GroupEvent::Closed { error }) => {
                    say(format!("CLOSED {error}"));
                    return Ok(());
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    say(format!("ERROR missed {n} events"));
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return Ok(()),
            },
            line = input.recv() => {
                let Some(line) = line else {
                    if observe.show {
                        say(crate::observe::group_line(&group).await);
                    }
                    return Ok(());
                };
                let words: Vec<&str> = line.split_whitespace().collect();
                match words.as_slice() {
                    ["show"] => say(crate::observe::group_line(&group).await),
                    ["register", name] => {
                        let endpoint = Endpoint { stats: stats.clone() }.start();
                        let handlers = Handlers::new(endpoint)
                            .with::<Echo>()
                            .with::<Seq>()
                            .with::<Bulk>();
                        match group.register(name, handlers).await {
                            Ok(()) => say(format!("REGISTER {name} ok")),
                            Err(GroupError::NameTaken { owner, .. }) => {
                                say(format!("REGISTER {name} taken {owner}"))
                            }
                            Err(e) => say(format!("REGISTER {name} err {e}")),
                        }
                    }
                    ["call", name, text] => {
                        match group.remote::<Echo>(name).send(Echo((*text).to_owned())).await {
                            Ok(reply) => say(format!("CALL {name} ok {reply}")),
                            Err(e) => say(format!("CALL {name} err {e}")),
                        }
                    }
                    ["burst", name, n] => {
                        let n: u64 = n.parse().unwrap_or(0);
                        let target = group.remote::<Seq>(name);
                        let from = group.local();
                        let tells = (0..n).map(|i| target.tell(Seq { from, n: i }));
                        match pipelined(tells, BURST_PIPELINE).await {
                            Ok(()) => say(format!("BURST {name} {n}")),
                            Err(e) => say(format!("BURST {name} err {e}")),
                        }
                    }
                    ["bulk", name, n, bytes] => {
                        let n: u64 = n.parse().unwrap_or(0);
                        let len: usize = bytes.parse().unwrap_or(0);
                        let target = group.remote::<Bulk>(name);
                        let from = group.local();
                        let tells = (0..n).map(|i| {
                            target.tell(Bulk { from, n: i, data: Bulk::pattern(i, len) })
                        });
                        match pipelined(tells, BULK_PIPELINE).await {
                            Ok(()) => say(format!("BULK {name} {n}")),
                            Err(e) => say(format!("BULK {name} err {e}")),
                        }
                    }
                    ["names"] => {
                        let names: Vec<String> = group
                            .names()
                            .await?
                            .into_iter()
                            .map(|(n, h)| format!("{n}={h}"))
                            .collect();
                        say(format!("NAMES {}", names.join(",")));
                    }
                    ["sink"] => {
                        let s = stats.borrow();
                        say(format!("SINK {} {}", s.count, s.in_order));
                    }
                    ["metrics"] => {
                        let m = group.metrics();
                        say(format!(
                            "METRICS delivered={} dropped={} try_again={} chunked={} resent={} stray={} version={} refused={}",
                            m.delivered,
                            m.dropped(),
                            m.try_again,
                            m.chunked_delivered,
                            m.chunked_resent,
                            m.chunks_stray,
                            m.protocol_version,
                            m.refused()
                        ));
                    }
                    ["leave"] => {
                        if observe.show {
                            say(crate::observe::group_line(&group).await);
                        }
                        group.leave().await?;
                        say("LEFT".into());
                        return Ok(());
                    }
                    ["tree"] => {
                        match group.start_tree(TEST_TREE, test_tree(), test_factories(output.clone())).await {
                            Ok(()) => say("TREE ok".into()),
                            Err(e) => say(format!("TREE err {e}")),
                        }
                    }
                    ["tree-typo"] => {
                        // The test tree with one kind misspelled: this
                        // member's factories cannot build it.
                        let mut spec = test_tree();
                        spec.root = spec
                            .root
                            .child(ChildSpec::worker("typo", "prboe"));
                        match group.start_tree("typo", spec, test_factories(output.clone())).await {
                            Ok(()) => say("TREE ok".into()),
                            Err(e) => say(format!("TREE err {e}")),
                        }
                    }
                    _ => say(format!("ERROR unknown command {line:?}")),
                }
            }
        }
    }
}

/// Name of the tree the `tree` command starts.
pub const TEST_TREE: &str = "conformance";

/// The tree the `tree` command starts: three permanent workers, a transient
/// one and a nested `one_for_all` supervisor of two, with the `Stop`
/// quorum policy.
pub fn test_tree() -> TreeSpec {
    let nested = SupervisorSpec::new(Strategy::OneForAll)
        .intensity(100, 60_000)
        .child(ChildSpec::worker("s1", "probe"))
        .child(ChildSpec::worker("s2", "probe"));
    TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .intensity(100, 60_000)
            .child(ChildSpec::worker("a", "probe"))
            .child(ChildSpec::worker("b", "probe"))
            .child(ChildSpec::worker("c", "probe"))
            .child(ChildSpec::worker("t", "probe").restart(RestartType::Transient))
            .child(ChildSpec::supervisor("sub", nested)),
    )
    .quorum_policy(QuorumPolicy::Stop)
}

/// Group-wide names of the test tree's workers.
pub const TEST_TREE_CHILDREN: [&str; 6] = [
    "conformance/a",
    "conformance/b",
    "conformance/c",
    "conformance/t",
    "conformance/sub/s1",
    "conformance/sub/s2",
];

/// A worker that says when it starts and stops.
struct Probe {
    name: String,
    incarnation: u64,
    output: UnboundedSender<String>,
}

impl Actor for Probe {
    type Context = Context<Self>;
    fn started(&mut self, _: &mut Context<Self>) {
        let _ = self
            .output
            .send(format!("CHILD-UP {} {}", self.name, self.incarnation));
    }
    fn stopped(&mut self, _: &mut Context<Self>) {
        let _ = self
            .output
            .send(format!("CHILD-DOWN {} {}", self.name, self.incarnation));
    }
}

impl Handler<Terminate> for Probe {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Context<Self>) {
        ctx.stop();
    }
}

impl Handler<Echo> for Probe {
    type Result = String;
    fn handle(&mut self, Echo(text): Echo, _: &mut Context<Self>) -> String {
        format!("{}:{text}", self.name)
    }
}

fn test_factories(output: UnboundedSender<String>) -> Factories {
    Factories::new().worker("probe", move |ctx: &ChildContext| {
        let addr = Probe {
            name: ctx.name.clone(),
            incarnation: ctx.incarnation.0,
            output: output.clone(),
        }
        .start();
        Child::serving(Handlers::new(addr).with::<Echo>())
    })
}

/// Runs one agent over this process's stdin and stdout until `leave` or
/// the end of stdin: what the `cpg-agent` binary does. Blocks; builds its
/// own actix system (the transport is joined inside it).
pub fn run_stdio<T: Transport>(transport: T, group: &GroupName, mode: Mode, observe: Observe) {
    use std::io::BufRead;
    let (in_tx, in_rx) = tokio::sync::mpsc::unbounded_channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lock().lines().map_while(Result::ok) {
            if in_tx.send(line).is_err() {
                break;
            }
        }
    });
    let (out_tx, mut out_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
    let printer = std::thread::spawn(move || {
        while let Some(line) = out_rx.blocking_recv() {
            println!("{line}");
        }
    });
    actix::System::new().block_on(async move {
        match transport.join(group) {
            Ok(conn) => run_observed(conn, mode, observe, in_rx, out_tx).await,
            Err(e) => {
                let _ = out_tx.send(format!("ERROR {e}"));
            }
        }
    });
    let _ = printer.join();
}
