//! The actix-cpg tour: a three-member group as an actor registry.
//!
//! What it shows, printed as it happens:
//! 1. three processes on three nodes join one CPG group;
//! 2. each registers a counter actor under a group-wide name, and all three
//!    race to register `journal`: the first registration in the total order
//!    wins on every member, the others get `NameTaken`;
//! 3. every member sends notes to the journal, interleaved; the journal
//!    receives them in the group's total order and replies with a position;
//! 4. a typed remote call to another member's counter, and its reply;
//! 5. the process on node 3 is killed (SIGKILL-like): the others see
//!    `ProcDown` (printed `left (process down)`), its names leave the
//!    registry at the same point on every member, and a call to them fails
//!    cleanly.
//!
//! Run it on the in-process `sim` backend (no daemon needed):
//!
//! ```text
//! cargo run --example demo
//! ```
//!
//! On the real 3-node corosync cluster (as root; `scripts/cluster.sh up`
//! first), each member runs as its own process in its node's namespace:
//!
//! ```text
//! cargo run --features corosync --example demo -- --corosync
//! ```
//!
//! `--record FILE` records each member's stream (FILE.1, FILE.2, FILE.3;
//! `acpg replay FILE.1` prints its decisions); `--show` prints each
//! member's metrics and `inspect()` snapshot before the end.

use std::time::Duration;

use actix::prelude::*;
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{
    CallError, Group, GroupConfig, GroupError, GroupEvent, GroupName, Handlers, NodeId,
    RemoteMessage, Transport,
};
use clap::Parser;
use serde::{Deserialize, Serialize};

mod support;

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

/// The actix-cpg tour: a three-member group as an actor registry.
///
/// Three members register actors under group-wide names, race for one name,
/// send notes to a journal in the group's total order and call each other;
/// then one member is killed and its names leave the registry everywhere.
/// It runs on the in-process sim backend unless `--corosync` is given.
#[derive(Parser)]
struct Cli {
    /// Run on the real 3-node corosync cluster, one process per node in its
    /// namespace (as root, after `bash scripts/cluster.sh up`). Setting
    /// ACPG_BACKEND=corosync does the same.
    #[arg(long)]
    corosync: bool,
    /// Be the member on node N: what the `--corosync` run starts in each
    /// node's namespace.
    #[arg(long, value_name = "N", hide = true)]
    member: Option<u32>,
    #[command(flatten)]
    observe: observe::Observe,
}

/// A note for the journal; the reply is its position in the journal.
#[derive(Message, Serialize, Deserialize, RemoteMessage, Debug)]
#[rtype(result = "u64")]
#[remote(tag = "demo.Note")]
struct Note {
    author: String,
    seq: u32,
}

/// Adds to a counter; the reply is the new total.
#[derive(Message, Serialize, Deserialize, RemoteMessage, Debug)]
#[rtype(result = "u64")]
#[remote(tag = "demo.Add")]
struct Add(u64);

#[derive(Default)]
struct Journal {
    host: String,
    entries: u64,
}

impl Actor for Journal {
    type Context = Context<Self>;
}

impl Handler<Note> for Journal {
    type Result = u64;

    fn handle(&mut self, note: Note, _: &mut Context<Self>) -> u64 {
        self.entries += 1;
        println!(
            "    journal@{} #{:<2} <- {} note {}",
            self.host, self.entries, note.author, note.seq
        );
        self.entries
    }
}

#[derive(Default)]
struct Counter {
    total: u64,
}

impl Actor for Counter {
    type Context = Context<Self>;
}

impl Handler<Add> for Counter {
    type Result = u64;

    fn handle(&mut self, Add(n): Add, _: &mut Context<Self>) -> u64 {
        self.total += n;
        self.total
    }
}

fn describe(who: &str, event: &GroupEvent) -> Option<String> {
    match event {
        GroupEvent::ViewChanged { .. }
        | GroupEvent::NameDropped { .. }
        | GroupEvent::Closed { .. } => Some(format!("[{who}] {event}")),
        _ => None,
    }
}

/// Prints one member's view changes and dropped names as they happen.
fn watch(group: &Group) {
    let mut events = group.subscribe();
    let who = group.local().to_string();
    actix::spawn(async move {
        while let Ok(event) = events.recv().await {
            if let Some(line) = describe(&who, &event) {
                println!("  {line}");
            }
        }
    });
}

/// Steps 2–4 for one member.
async fn register_and_talk(group: &Group) -> Result<(), GroupError> {
    let node = group.local().node;
    let counter = Counter::default().start();
    group
        .register(
            &format!("counter-{node}"),
            Handlers::new(counter).with::<Add>(),
        )
        .await?;
    let journal = Journal {
        host: node.to_string(),
        entries: 0,
    }
    .start();
    match group
        .register("journal", Handlers::new(journal).with::<Note>())
        .await
    {
        Ok(()) => println!(
            "  [{}] registered \"journal\" (first in the total order)",
            group.local()
        ),
        Err(GroupError::NameTaken { owner, .. }) => {
            println!("  [{}] \"journal\" is taken by {owner}", group.local())
        }
        Err(e) => return Err(e),
    }
    Ok(())
}

async fn send_notes(group: Group, notes: u32) -> Vec<u64> {
    let journal = group.remote::<Note>("journal");
    let author = group.local().node.to_string();
    let mut positions = Vec::new();
    for seq in 1..=notes {
        let note = Note {
            author: author.clone(),
            seq,
        };
        match journal.send(note).await {
            Ok(pos) => positions.push(pos),
            Err(e) => println!("  [{}] note {seq} failed: {e}", group.local()),
        }
    }
    positions
}

async fn sim_demo(observe: observe::Observe) -> Result<(), Box<dyn std::error::Error>> {
    println!("== actix-cpg demo on the sim backend: 3 nodes, 1 process each ==");
    let cluster = SimCluster::new(3);
    let name = GroupName::new("actix-cpg-demo")?;
    let mut groups = Vec::new();
    let mut processes = Vec::new();
    println!("\n-- 1. three processes join {name}");
    for node in 1..=3 {
        let process = cluster.process(NodeId(node))?;
        let config = GroupConfig {
            record_to: observe.record_to(node),
            ..GroupConfig::default()
        };
        let group = Group::start(process.join(&name)?, config).await?;
        println!("  {} joined and holds the group state", group.local());
        if node == 1 {
            watch(&group);
        }
        groups.push(group);
        processes.push(process);
    }

    println!("\n-- 2. every member registers its counter; all three race for \"journal\"");
    let racers: Vec<_> = groups.iter().map(register_and_talk).collect();
    for result in futures::future::join_all(racers).await {
        result?;
    }
    print_registry(&groups[0]).await?;

    println!("\n-- 3. every member sends 4 notes to \"journal\" at once: one total order");
    let senders: Vec<_> = groups.iter().map(|g| send_notes(g.clone(), 4)).collect();
    let positions = futures::future::join_all(senders).await;
    for (g, p) in groups.iter().zip(positions) {
        println!("  [{}] its notes landed at positions {p:?}", g.local());
    }

    println!("\n-- 4. a typed remote call from node1 to node3's counter");
    let add = groups[0].remote::<Add>("counter-node3");
    println!("  counter-node3 + 5 = {}", add.send(Add(5)).await?);
    println!("  counter-node3 + 7 = {}", add.send(Add(7)).await?);

    println!("\n-- 5. the process on node 3 is killed");
    cluster.kill_process(processes[2].member())?;
    // Let the confchg reach the survivors' runtimes.
    actix_rt::time::sleep(Duration::from_millis(50)).await;
    match add.send(Add(1)).await {
        Err(CallError::NoSuchName(n)) => println!("  call to {n:?} now fails: no such name"),
        other => println!("  unexpected: {other:?}"),
    }
    print_registry(&groups[0]).await?;
    let a = groups[0].names().await?;
    let b = groups[1].names().await?;
    println!(
        "  node1 and node2 hold the same registry: {}",
        if a == b { "yes" } else { "NO" }
    );
    observe.show(&groups).await;
    for g in &groups[..2] {
        g.leave().await?;
    }
    println!("\n== done ==");
    Ok(())
}

async fn print_registry(group: &Group) -> Result<(), GroupError> {
    println!("  registry as seen by {}:", group.local());
    for (name, host) in group.names().await? {
        println!("    {name:<16} -> {host}");
    }
    Ok(())
}

#[cfg(feature = "corosync")]
mod real {
    //! The same tour with one OS process per member, each in its node's
    //! network namespace of the test cluster (`scripts/cluster.sh`).

    use super::*;
    use actix_cpg::transport::corosync::Corosync;
    use std::io::{BufRead, BufReader};
    use std::process::Stdio;

    /// Parent: start three members, relay their output, kill the third.
    pub fn orchestrate(observe: &observe::Observe) -> Result<(), Box<dyn std::error::Error>> {
        println!("== actix-cpg demo on the real corosync cluster: 3 nodes, 1 process each ==");
        let mut children = Vec::new();
        let (tx, rx) = std::sync::mpsc::channel::<(u32, String)>();
        for node in 1..=3u32 {
            let mut child = crate::support::member_command(node)?
                .args(["--member", &node.to_string()])
                .args(observe.forward(node))
                .stdout(Stdio::piped())
                .stdin(Stdio::piped())
                .spawn()?;
            let out = child.stdout.take().ok_or("no stdout")?;
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send((node, line));
                }
            });
            children.push(child);
        }
        drop(tx);
        let mut done = 0;
        while let Ok((node, line)) = rx.recv_timeout(Duration::from_secs(60)) {
            if line == "KILL-ME" {
                println!("\n-- 5. SIGKILL the member process on node {node}");
                children[node as usize - 1].kill()?;
                continue;
            }
            if line == "DONE" {
                done += 1;
                if done == 2 {
                    break;
                }
                continue;
            }
            println!("{line}");
        }
        for mut child in children {
            let _ = child.kill();
            let _ = child.wait();
        }
        println!("\n== done ==");
        Ok(())
    }

    /// Child: one member of the tour.
    pub async fn member(
        node: u32,
        observe: observe::Observe,
    ) -> Result<(), Box<dyn std::error::Error>> {
        let name = GroupName::new("actix-cpg-demo")?;
        let config = GroupConfig {
            record_to: observe.record_alone(),
            ..GroupConfig::default()
        };
        let group = Group::start(Corosync::new().join(&name)?, config).await?;
        if node == 1 {
            watch(&group);
        }
        let mut events = group.subscribe();
        while group.members().await?.len() < 3 {
            let _ = events.recv().await;
        }
        println!("  {} sees all three members", group.local());
        register_and_talk(&group).await?;
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        if node == 1 {
            print_registry(&group).await?;
        }
        let positions = send_notes(group.clone(), 4).await;
        println!(
            "  [{}] its notes landed at positions {positions:?}",
            group.local()
        );
        actix_rt::time::sleep(Duration::from_millis(500)).await;
        if node == 1 {
            let add = group.remote::<Add>("counter-node3");
            println!("\n-- 4. a typed remote call from node1 to node3's counter");
            println!("  counter-node3 + 5 = {}", add.send(Add(5)).await?);
        }
        actix_rt::time::sleep(Duration::from_millis(300)).await;
        if node == 3 {
            println!("KILL-ME");
            // Wait for the parent's SIGKILL.
            actix_rt::time::sleep(Duration::from_secs(60)).await;
            return Ok(());
        }
        while group.members().await?.len() > 2 {
            let _ = events.recv().await;
        }
        actix_rt::time::sleep(Duration::from_millis(100)).await;
        if node == 1 {
            match group.remote::<Add>("counter-node3").send(Add(1)).await {
                Err(CallError::NoSuchName(n)) => {
                    println!("  call to {n:?} now fails: no such name")
                }
                other => println!("  unexpected: {other:?}"),
            }
            print_registry(&group).await?;
        } else {
            // Let node 1 finish its checks before this member leaves.
            actix_rt::time::sleep(Duration::from_millis(500)).await;
        }
        observe.show([&group]).await;
        group.leave().await?;
        println!("DONE");
        Ok(())
    }
}

fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init();
    let Cli {
        corosync,
        member,
        observe,
    } = Cli::parse();
    let corosync = corosync || std::env::var("ACPG_BACKEND").is_ok_and(|b| b == "corosync");
    #[cfg(feature = "corosync")]
    {
        if let Some(node) = member {
            return actix::System::new().block_on(real::member(node, observe));
        }
        if corosync {
            return real::orchestrate(&observe);
        }
    }
    #[cfg(not(feature = "corosync"))]
    if corosync || member.is_some() {
        return Err("the real backend needs `--features corosync`".into());
    }
    actix::System::new().block_on(sim_demo(observe))
}
