//! Your own replicated state machine, in a few lines: a bank of accounts
//! whose transfers apply in the group's total order on every replica, so
//! every replica holds the same balances and no transfer overdraws.
//!
//! Three replicas on the in-process `sim` backend: two clients transfer
//! concurrently from different members, then a fourth replica joins late
//! and receives the state by snapshot; last, the replicas compare digests
//! of their state (a divergence check, which finds an `apply` that is not
//! deterministic). No daemon needed:
//!
//! ```text
//! cargo run --example own_state_machine
//! cargo run --example own_state_machine -- --record /tmp/bank --show   # /tmp/bank.1 ..4
//! ```
//!
//! A replica's recording replays with its state machine:
//! `cargo run --example own_state_machine -- --replay /tmp/bank.4` prints
//! the decisions of the late joiner (`actix_cpg::replicated::replay`).

use std::collections::BTreeMap;

use actix_cpg::replicated::{
    decode_snapshot, digest_of, encode_snapshot, ReplicaEvent, StateDigest,
};
use actix_cpg::transport::sim::SimCluster;
use actix_cpg::{GroupName, NodeId, Replica, ReplicaConfig, StateMachine, Transport};
use clap::Parser;
use serde::{Deserialize, Serialize};

#[path = "support/observe.rs"]
mod observe;

#[path = "support/logs.rs"]
mod logs;

#[derive(Default, Debug, PartialEq)]
struct Bank(BTreeMap<String, u64>);

#[derive(Serialize, Deserialize)]
enum Op {
    Deposit(String, u64),
    Transfer {
        from: String,
        to: String,
        amount: u64,
    },
}

impl StateMachine for Bank {
    type Command = Op;
    /// Whether the operation was applied (a transfer that would overdraw
    /// is refused, identically on every replica).
    type Response = bool;
    type Snapshot = BTreeMap<String, u64>;

    fn apply(&mut self, op: Op) -> bool {
        match op {
            Op::Deposit(account, amount) => *self.0.entry(account).or_default() += amount,
            Op::Transfer { from, to, amount } => {
                let balance = self.0.get(&from).copied().unwrap_or(0);
                if balance < amount {
                    return false;
                }
                self.0.insert(from, balance - amount);
                *self.0.entry(to).or_default() += amount;
            }
        }
        true
    }

    fn snapshot(&self) -> Self::Snapshot {
        self.0.clone()
    }

    fn encode(snapshot: Self::Snapshot) -> Vec<u8> {
        encode_snapshot(&snapshot)
    }

    fn restore(bytes: &[u8]) -> Result<Self, String> {
        decode_snapshot(bytes, 1 << 20).map(Bank)
    }

    /// Equal banks encode alike (a `BTreeMap` iterates in key order), so
    /// the encoding's hash is a digest for divergence checks.
    fn digest(&self) -> Option<StateDigest> {
        Some(digest_of(&encode_snapshot(&self.0)))
    }
}

/// A replicated bank: concurrent transfers decided by the total order, a
/// late joiner (sim backend).
#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    observe: observe::Observe,
    /// Print the decisions of a recording this example made, and exit.
    #[arg(long, value_name = "FILE")]
    replay: Option<std::path::PathBuf>,
}

#[actix::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    logs::init();
    let Cli { observe, replay } = Cli::parse();
    if let Some(path) = replay {
        return Ok(observe::replay_replica::<Bank>(&path)?);
    }
    let cluster = SimCluster::new(4);
    let name = GroupName::new("bank")?;
    let join = |node| -> Result<_, Box<dyn std::error::Error>> {
        Ok(cluster.process(NodeId(node))?.join(&name)?)
    };
    let config = |member| ReplicaConfig {
        record_to: observe.record_to(member),
        ..ReplicaConfig::default()
    };
    let mut replicas = Vec::new();
    for node in 1..=3 {
        replicas.push(Replica::<Bank>::start(join(node)?, config(node)).await?);
    }
    replicas[0].wait_primary().await?;
    replicas[0]
        .execute(Op::Deposit("alice".into(), 100))
        .await?;

    // Two members race to spend alice's 100: the total order decides, and
    // the same transfer is refused on every replica.
    let to_bob = replicas[1].execute(Op::Transfer {
        from: "alice".into(),
        to: "bob".into(),
        amount: 80,
    });
    let to_carol = replicas[2].execute(Op::Transfer {
        from: "alice".into(),
        to: "carol".into(),
        amount: 80,
    });
    let (bob, carol) = (to_bob.await?, to_carol.await?);
    println!("transfer to bob applied: {bob}, to carol applied: {carol}");
    assert!(
        bob != carol,
        "exactly one of the two fits in alice's balance"
    );

    // A late joiner gets the state by snapshot, then follows the order.
    let late = Replica::<Bank>::start(join(4)?, config(4)).await?;
    late.wait_primary().await?;
    late.execute(Op::Deposit("dave".into(), 5)).await?;
    let mut seen = Vec::new();
    for (i, replica) in replicas.iter().chain([&late]).enumerate() {
        // A command of its own: once it is applied here, so is everything
        // before it in the order; then the local state is read.
        replica.execute(Op::Deposit("alice".into(), 0)).await?;
        let balances = replica.query(|bank| bank.0.clone()).await?;
        println!("replica {}: {balances:?}", i + 1);
        seen.push(balances);
    }
    assert!(seen.windows(2).all(|w| w[0] == w[1]), "replicas agree");

    // The replicas compare digests of their state at one point of the
    // order (they also do every `digest_every` commands).
    let mut events = late.subscribe();
    replicas[0].check().await?;
    loop {
        match events.recv().await? {
            e @ ReplicaEvent::Checked { .. } => break println!("{e}"),
            e @ ReplicaEvent::Diverged { .. } => return Err(e.to_string().into()),
            _ => {}
        }
    }
    observe.show(replicas.iter().chain([&late])).await;
    Ok(())
}
