//! Seeds the fuzz corpora from real runs: simulated groups do real work
//! (a registry with calls and a message in pieces, a supervision tree
//! through a crash, a late joiner and a merge; a replicated map with writes,
//! joins and a kill; an election losing its leader), every member's ordered
//! stream is recorded, and each recording becomes one input of the fuzz
//! stream format (`actix_cpg::fuzzing::Stream`) under
//! `fuzz/corpus/<target>/seed-*`.
//!
//! The registry runs use the library's own recorder
//! (`GroupConfig::record_to`); replicas and elections have none, so a
//! connection wrapper taps their events (quorum notifications included).
//!
//! ```sh
//! cargo run --features fuzzing --example fuzz_corpus [OUT_DIR]
//! ```

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::task::Poll;
use std::time::Duration;

use actix::prelude::*;
use actix_cpg::fuzzing::{stream_from_events, stream_from_recording, summary, Op, Stream};
use actix_cpg::kv::{KvCommand, KvStore};
use actix_cpg::record::Recording;
use actix_cpg::supervisor::{ChildSpec, QuorumPolicy, Strategy, SupervisorSpec, TreeSpec};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::transport::FlowControl;
use actix_cpg::{
    Child, ChildContext, Connection, Election, ElectionConfig, Factories, Group, GroupConfig,
    GroupName, Handlers, Member, NodeId, Replica, ReplicaConfig, Terminate, Transport,
    TransportError, TransportEvent,
};

#[path = "support/logs.rs"]
mod logs;

type Error = Box<dyn std::error::Error>;

/// Asks an echo actor to answer with the same text. The tag is part of the
/// recorded bytes the seeds are made from: it stays what it was when the
/// committed seeds were made.
#[derive(Message, serde::Serialize, serde::Deserialize, Debug)]
#[rtype(result = "String")]
struct Echo(String);

impl actix_cpg::RemoteMessage for Echo {
    const TYPE_TAG: &'static str = "actix-cpg.testing.Echo";
}

struct EchoActor;

impl Actor for EchoActor {
    type Context = Context<Self>;
}

impl Handler<Echo> for EchoActor {
    type Result = String;
    fn handle(&mut self, Echo(s): Echo, _: &mut Self::Context) -> String {
        s
    }
}

impl Handler<Terminate> for EchoActor {
    type Result = ();
    fn handle(&mut self, _: Terminate, ctx: &mut Self::Context) {
        ctx.stop();
    }
}

/// A connection that keeps a copy of every event it hands on.
struct Tap<C> {
    inner: C,
    events: Arc<Mutex<Vec<TransportEvent>>>,
}

impl<C: Connection> Connection for Tap<C> {
    fn group(&self) -> &GroupName {
        self.inner.group()
    }
    fn local(&self) -> Member {
        self.inner.local()
    }
    fn mcast(&mut self, bytes: &[u8]) -> Result<(), TransportError> {
        self.inner.mcast(bytes)
    }
    fn poll_event(
        &mut self,
        cx: &mut std::task::Context<'_>,
    ) -> Poll<Result<TransportEvent, TransportError>> {
        let polled = self.inner.poll_event(cx);
        if let Poll::Ready(Ok(event)) = &polled {
            self.events.lock().expect("tap").push(event.clone());
        }
        polled
    }
    fn members(&self) -> Result<Vec<Member>, TransportError> {
        self.inner.members()
    }
    fn max_message_size(&self) -> usize {
        self.inner.max_message_size()
    }
    fn flow_control(&self) -> FlowControl {
        self.inner.flow_control()
    }
    fn leave(&mut self) -> Result<(), TransportError> {
        self.inner.leave()
    }
}

type Tapped = (Member, Arc<Mutex<Vec<TransportEvent>>>);

fn tap<C: Connection>(conn: C) -> (Tap<C>, Tapped) {
    let events = Arc::new(Mutex::new(Vec::new()));
    let local = conn.local();
    (
        Tap {
            inner: conn,
            events: events.clone(),
        },
        (local, events),
    )
}

/// Echoes that let the driven cores' own messages go round after the
/// recorded stream, alternating between the two.
fn echoes(n: u8) -> Vec<Op> {
    (0..n).map(|i| Op::Echo { core: i, index: 0 }).collect()
}

fn settle() -> actix_rt::time::Sleep {
    actix_rt::time::sleep(Duration::from_millis(150))
}

fn config(dir: &Path, tag: &str, member: usize) -> GroupConfig {
    GroupConfig {
        record_to: Some(dir.join(format!("{tag}-{member}.rec"))),
        chunk_size: 2 << 10,
        ..GroupConfig::default()
    }
}

/// Registry, calls, a message in pieces, a kill; then a late joiner.
async fn registry(dir: &Path) -> Result<(), Error> {
    let cluster = SimCluster::new(4);
    let name = GroupName::new("seed-registry")?;
    let mut groups = Vec::new();
    for node in 1..=3 {
        let conn = cluster.process(NodeId(node))?.join(&name)?;
        groups.push(Group::start(conn, config(dir, "registry", node as usize)).await?);
    }
    groups[0]
        .register("echo", Handlers::new(EchoActor.start()).with::<Echo>())
        .await?;
    groups[1]
        .register("other", Handlers::new(EchoActor.start()).with::<Echo>())
        .await?;
    let echo = groups[2].remote::<Echo>("echo");
    echo.send(Echo("small".into())).await?;
    echo.send(Echo("x".repeat(7_000))).await?;
    groups[1].unregister("other").await?;
    let late = cluster.process(NodeId(4))?;
    let joiner = Group::start(late.join(&name)?, config(dir, "registry", 4)).await?;
    joiner
        .remote::<Echo>("echo")
        .send(Echo("late".into()))
        .await?;
    cluster.kill_process(groups[2].local())?;
    settle().await;
    Ok(())
}

/// A supervision tree; a member dies, a partition heals (a merge).
async fn supervision(dir: &Path) -> Result<(), Error> {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("seed-supervision")?;
    let spec = TreeSpec::new(
        SupervisorSpec::new(Strategy::OneForOne)
            .child(ChildSpec::worker("a", "echo"))
            .child(ChildSpec::worker("b", "echo")),
    )
    .quorum_policy(QuorumPolicy::Stop);
    let mut groups = Vec::new();
    let mut processes = Vec::new();
    for node in 1..=3 {
        let process = cluster.process(NodeId(node))?;
        let g = Group::start(
            process.join(&name)?,
            config(dir, "supervision", node as usize),
        )
        .await?;
        let factories = Factories::new().worker("echo", |_: &ChildContext| {
            Child::serving(Handlers::new(EchoActor.start()).with::<Echo>())
        });
        g.start_tree("jobs", spec.clone(), factories).await?;
        groups.push(g);
        processes.push(process);
    }
    settle().await;
    cluster.partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])?;
    settle().await;
    cluster.heal();
    settle().await;
    cluster.kill_process(processes[1].member())?;
    settle().await;
    Ok(())
}

/// A replicated map: writes, a joiner, a kill, more writes.
async fn replicated() -> Result<Vec<Tapped>, Error> {
    let cluster = SimCluster::new(4);
    let name = GroupName::new("seed-kv")?;
    let mut taps = Vec::new();
    let mut replicas = Vec::new();
    for node in 1..=3 {
        let (conn, t) = tap(cluster.process(NodeId(node))?.join(&name)?);
        taps.push(t);
        replicas.push(Replica::<KvStore>::start(conn, ReplicaConfig::default()).await?);
    }
    replicas[0].wait_primary().await?;
    for i in 0..6 {
        let cmd = KvCommand::Put {
            key: format!("k{i}"),
            value: format!("v{i}"),
        };
        replicas[i % 3].execute(cmd).await?;
    }
    let (conn, t) = tap(cluster.process(NodeId(4))?.join(&name)?);
    taps.push(t);
    let late = Replica::<KvStore>::start(conn, ReplicaConfig::default()).await?;
    late.wait_primary().await?;
    late.execute(KvCommand::Cas {
        key: "k1".into(),
        expected: Some("v1".into()),
        new: None,
    })
    .await?;
    cluster.kill_process(replicas[1].local())?;
    settle().await;
    replicas[0]
        .execute(KvCommand::Get { key: "k2".into() })
        .await?;
    settle().await;
    Ok(taps)
}

/// An election: a named one stood for, the leader killed, a hand-over.
async fn election() -> Result<Vec<Tapped>, Error> {
    let cluster = SimCluster::new(3);
    let name = GroupName::new("seed-election")?;
    let mut taps = Vec::new();
    let mut elections = Vec::new();
    for node in 1..=3 {
        let (conn, t) = tap(cluster.process(NodeId(node))?.join(&name)?);
        taps.push(t);
        elections.push(Election::start(conn, ElectionConfig::default()).await?);
    }
    elections[1].stand("jobs").await?;
    elections[2].stand("jobs").await?;
    let leader = elections[0].wait_leader("").await?;
    settle().await;
    cluster.kill_process(leader.leader)?;
    settle().await;
    elections[2].withdraw("jobs").await?;
    settle().await;
    Ok(taps)
}

fn write(out: &Path, target: &str, tag: &str, stream: &Stream) -> Result<(), Error> {
    let dir = out.join(target);
    std::fs::create_dir_all(&dir)?;
    let path = dir.join(format!("seed-{tag}"));
    let bytes = stream.encode();
    println!(
        "{} ({} bytes): {:?}",
        path.display(),
        bytes.len(),
        summary(stream)
    );
    std::fs::write(path, bytes)?;
    Ok(())
}

fn main() -> Result<(), Error> {
    logs::init();
    let out = std::env::args_os()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("fuzz/corpus"));
    let dir = std::env::temp_dir().join(format!("acpg-seeds-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let (kv, votes) = actix::System::new().block_on(async {
        registry(&dir).await?;
        supervision(&dir).await?;
        Ok::<_, Error>((replicated().await?, election().await?))
    })?;
    for (tag, targets) in [
        ("registry", &["group", "supervisor"][..]),
        ("supervision", &["group", "supervisor"][..]),
    ] {
        for member in 1..=4 {
            let path = dir.join(format!("{tag}-{member}.rec"));
            let Ok(recording) = Recording::open(&path) else {
                continue;
            };
            let stream = stream_from_recording(&recording, &echoes(8));
            for target in targets {
                write(&out, target, &format!("{tag}-{member}"), &stream)?;
            }
        }
    }
    let first_events = |taps: &[Tapped]| taps[0].1.lock().expect("tap").clone();
    let (kv_events, vote_events) = (first_events(&kv), first_events(&votes));
    for (target, taps) in [("replicated", kv), ("election", votes)] {
        for (n, (local, events)) in taps.into_iter().enumerate() {
            let events = events.lock().expect("tap").clone();
            let stream = stream_from_events(local, &events, &echoes(12));
            write(&out, target, &format!("{target}-{}", n + 1), &stream)?;
        }
    }
    // The decoders' targets: up to three messages of each kind the runs
    // carried, as a frame (`wire`) and as a body behind its type's pick
    // byte (`bodies`).
    let mut delivered: Vec<Vec<u8>> = Vec::new();
    for tag in ["registry-1", "supervision-1"] {
        for entry in Recording::open(&dir.join(format!("{tag}.rec")))?.entries {
            if let actix_cpg::record::Recorded::Deliver { bytes, .. } = entry {
                delivered.push(bytes);
            }
        }
    }
    for events in [&kv_events, &vote_events] {
        delivered.extend(events.iter().filter_map(|e| match e {
            TransportEvent::Deliver { bytes, .. } => Some(bytes.clone()),
            _ => None,
        }));
    }
    let mut per_kind = std::collections::BTreeMap::<u8, usize>::new();
    for bytes in delivered {
        let Some(&kind) = bytes.get(5) else { continue };
        let seen = per_kind.entry(kind).or_default();
        if *seen == 3 {
            continue;
        }
        *seen += 1;
        let tag = format!("seed-kind{kind}-{seen}");
        let mut framed = vec![0xff, 0xff];
        framed.extend_from_slice(&bytes);
        std::fs::create_dir_all(out.join("wire"))?;
        std::fs::write(out.join("wire").join(&tag), framed)?;
        // The pick bytes of `actix_cpg::fuzzing::bodies`.
        let pick = match kind {
            1 => 0u8,
            2 => 1,
            3 => 2,
            4 => 3,
            5 => 4,
            32 => 5,
            16 => 6,
            17 => 7,
            8 => 11,
            _ => continue,
        };
        let mut body = vec![pick];
        body.extend_from_slice(bytes.get(8..).unwrap_or_default());
        std::fs::create_dir_all(out.join("bodies"))?;
        std::fs::write(out.join("bodies").join(&tag), body)?;
    }
    compressed_seeds(&out)?;
    std::fs::remove_dir_all(&dir)?;
    Ok(())
}

/// Compressed frames for the `wire` target (the runs above send nothing
/// large enough to be compressed): one that opens into a batch, and a
/// bomb whose claim is past the limit.
fn compressed_seeds(out: &std::path::Path) -> Result<(), Error> {
    use actix_cpg::wire::{push_to_batch, Codec, Kind, HEADER_LEN};
    let codec = Codec::new(1 << 20);
    let entry = codec.encode(Kind::Registry, &"x".repeat(512))?;
    let mut batch = codec.begin_batch(2048);
    push_to_batch(&mut batch, &entry);
    push_to_batch(&mut batch, &entry);
    let mut packed = Vec::new();
    assert!(
        codec.compress_into(&batch, &mut packed),
        "a batch of repeats compresses"
    );
    let mut bomb = packed[..HEADER_LEN].to_vec();
    bomb.extend_from_slice(&(64u32 << 20).to_le_bytes());
    bomb.extend_from_slice(&packed[HEADER_LEN + 4..]);
    std::fs::create_dir_all(out.join("wire"))?;
    for (tag, frame) in [
        ("seed-compressed-batch", packed),
        ("seed-compressed-bomb", bomb),
    ] {
        let mut framed = vec![0xff, 0xff];
        framed.extend_from_slice(&frame);
        std::fs::write(out.join("wire").join(tag), framed)?;
    }
    Ok(())
}
