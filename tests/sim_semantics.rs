//! CPG semantics of the sim backend through the public API, with async
//! readers where waking matters.

use std::time::Duration;

use actix_cpg::transport::sim::{SimCluster, SimConnection};
use actix_cpg::transport::{
    next_event, Connection, GroupName, Member, MemberChange, NodeId, Reason, Transport,
    TransportError, TransportEvent,
};

fn group(name: &str) -> GroupName {
    GroupName::new(name).expect("valid group name")
}

fn join(cluster: &SimCluster, node: u32, g: &GroupName) -> SimConnection {
    cluster
        .process(NodeId(node))
        .expect("node is up")
        .join(g)
        .expect("joined")
}

fn drain(conn: &mut SimConnection) -> Vec<TransportEvent> {
    std::iter::from_fn(|| conn.try_next_event().ok().flatten()).collect()
}

fn confchgs(events: &[TransportEvent]) -> Vec<(Vec<Member>, Vec<MemberChange>, Vec<MemberChange>)> {
    events
        .iter()
        .filter_map(|e| match e {
            TransportEvent::ConfChg {
                members,
                joined,
                left,
            } => Some((members.clone(), joined.clone(), left.clone())),
            _ => None,
        })
        .collect()
}

fn messages(events: &[TransportEvent]) -> Vec<(Member, Vec<u8>)> {
    events
        .iter()
        .filter_map(|e| match e {
            TransportEvent::Deliver { from, bytes } => Some((*from, bytes.clone())),
            _ => None,
        })
        .collect()
}

fn change(member: Member, reason: Reason) -> MemberChange {
    MemberChange { member, reason }
}

async fn next_message(conn: &mut SimConnection) -> Result<(Member, Vec<u8>), TransportError> {
    loop {
        if let TransportEvent::Deliver { from, bytes } = next_event(conn).await? {
            return Ok((from, bytes));
        }
    }
}

const PATIENCE: Duration = Duration::from_secs(5);

#[tokio::test]
async fn a_task_parked_on_next_event_wakes_when_a_message_arrives() {
    let cluster = SimCluster::new(2);
    let g = group("wake");
    let mut a = join(&cluster, 1, &g);
    let mut b = join(&cluster, 2, &g);
    drain(&mut a);
    drain(&mut b);
    let reader = tokio::spawn(async move { next_message(&mut a).await });
    tokio::task::yield_now().await;
    b.mcast(b"hello").expect("sent");
    let got = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("woken in time")
        .expect("task ran");
    assert_eq!(got, Ok((b.local(), b"hello".to_vec())));
}

#[tokio::test]
async fn a_task_parked_on_next_event_wakes_with_closed_when_its_process_is_killed() {
    let cluster = SimCluster::new(1);
    let g = group("kill");
    let process = cluster.process(NodeId(1)).expect("up");
    let mut a = process.join(&g).expect("joined");
    drain(&mut a);
    let reader = tokio::spawn(async move { next_event(&mut a).await });
    tokio::task::yield_now().await;
    process.kill().expect("killed");
    let got = tokio::time::timeout(PATIENCE, reader)
        .await
        .expect("woken in time")
        .expect("task ran");
    assert!(matches!(got, Err(TransportError::Killed(_))), "{got:?}");
}

#[tokio::test]
async fn three_concurrent_senders_agree_on_one_order() {
    const EACH: usize = 50;
    let cluster = SimCluster::new(3);
    let g = group("order");
    let conns: Vec<SimConnection> = (1..=3).map(|n| join(&cluster, n, &g)).collect();
    let tasks: Vec<_> = conns
        .into_iter()
        .enumerate()
        .map(|(i, mut conn)| {
            tokio::spawn(async move {
                let mut seen = Vec::new();
                for k in 0..EACH {
                    conn.mcast(format!("{i}:{k}").as_bytes()).expect("sent");
                    tokio::task::yield_now().await;
                    if k % 3 == i {
                        seen.push(next_message(&mut conn).await.expect("open"));
                    }
                }
                while seen.len() < 3 * EACH {
                    seen.push(next_message(&mut conn).await.expect("open"));
                }
                seen
            })
        })
        .collect();
    let mut orders = Vec::new();
    for task in tasks {
        orders.push(
            tokio::time::timeout(PATIENCE, task)
                .await
                .expect("done in time")
                .expect("task ran"),
        );
    }
    assert_eq!(orders[0], orders[1]);
    assert_eq!(orders[1], orders[2]);
}

#[tokio::test]
async fn a_sender_that_retries_on_try_again_loses_and_reorders_nothing() {
    const COUNT: u32 = 200;
    let cluster = SimCluster::builder(2).max_backlog(3).build();
    let g = group("retry");
    let mut sender = join(&cluster, 1, &g);
    let mut receiver = join(&cluster, 2, &g);
    let me = sender.local();
    let receiving = tokio::spawn(async move {
        let mut got = Vec::new();
        while got.len() < COUNT as usize {
            got.push(next_message(&mut receiver).await.expect("open"));
        }
        got
    });
    let mut refused = 0;
    for k in 0..COUNT {
        let bytes = k.to_le_bytes();
        loop {
            match sender.mcast(&bytes) {
                Ok(()) => break,
                Err(TransportError::TryAgain) => {
                    refused += 1;
                    // Dispatching is what frees the window.
                    next_event(&mut sender).await.expect("open");
                }
                Err(other) => panic!("unexpected {other}"),
            }
        }
    }
    let got = tokio::time::timeout(PATIENCE, receiving)
        .await
        .expect("done in time")
        .expect("task ran");
    let expected: Vec<(Member, Vec<u8>)> =
        (0..COUNT).map(|k| (me, k.to_le_bytes().to_vec())).collect();
    assert_eq!(got, expected);
    assert!(refused > 0, "the window of 3 must have filled");
}

#[test]
fn processes_on_one_node_each_get_their_own_copy_and_confchg() {
    let cluster = SimCluster::new(1);
    let g = group("copies");
    let mut a = join(&cluster, 1, &g);
    let mut b = join(&cluster, 1, &g);
    assert_ne!(a.local(), b.local());
    assert_eq!(a.local().node, b.local().node);
    drain(&mut a);
    drain(&mut b);
    a.mcast(b"one").expect("sent");
    assert_eq!(messages(&drain(&mut a)), vec![(a.local(), b"one".to_vec())]);
    assert_eq!(messages(&drain(&mut b)), vec![(a.local(), b"one".to_vec())]);
}

#[test]
fn a_crash_is_nodedown_for_every_process_of_the_node_in_every_group() {
    let cluster = SimCluster::new(2);
    let (g, h) = (group("g"), group("h"));
    let p = cluster.process(NodeId(2)).expect("up");
    let q = cluster.process(NodeId(2)).expect("up");
    let _pg = p.join(&g).expect("joined");
    let _qg = q.join(&g).expect("joined");
    let _ph = p.join(&h).expect("joined");
    let mut watch_g = join(&cluster, 1, &g);
    let mut watch_h = join(&cluster, 1, &h);
    drain(&mut watch_g);
    drain(&mut watch_h);
    cluster.crash_node(NodeId(2)).expect("crashed");
    assert_eq!(
        confchgs(&drain(&mut watch_g)),
        vec![(
            vec![watch_g.local()],
            vec![],
            vec![
                change(p.member(), Reason::NodeDown),
                change(q.member(), Reason::NodeDown)
            ]
        )]
    );
    assert_eq!(
        confchgs(&drain(&mut watch_h))[0].2,
        vec![change(p.member(), Reason::NodeDown)]
    );
    assert!(!p.is_alive() && !q.is_alive());
}

#[test]
fn five_nodes_split_two_three_and_only_the_majority_is_quorate() {
    let cluster = SimCluster::new(5);
    let g = group("quorum");
    let mut small = join(&cluster, 1, &g);
    let mut large = join(&cluster, 5, &g);
    drain(&mut small);
    drain(&mut large);
    cluster
        .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3), NodeId(4), NodeId(5)]])
        .expect("split");
    let quorate = |events: &[TransportEvent]| -> Vec<bool> {
        events
            .iter()
            .filter_map(|e| match e {
                TransportEvent::Quorum(q) => Some(q.quorate),
                _ => None,
            })
            .collect()
    };
    let at_small = drain(&mut small);
    let at_large = drain(&mut large);
    assert_eq!(quorate(&at_small), vec![false]);
    assert_eq!(quorate(&at_large), vec![true]);
    assert_eq!(
        cluster.quorum(NodeId(2)).map(|q| q.nodes),
        Some(vec![NodeId(1), NodeId(2)])
    );
    // The minority learns it lost quorum before it sees the others go.
    assert!(matches!(at_small.first(), Some(TransportEvent::Quorum(q)) if !q.quorate));
    assert!(matches!(
        at_small.get(1),
        Some(TransportEvent::ConfChg { .. })
    ));
    assert!(matches!(
        at_small.get(2),
        Some(TransportEvent::TotemConfChg { .. })
    ));
}

#[test]
fn messages_stay_on_their_side_until_the_heal() {
    let cluster = SimCluster::new(2);
    let g = group("sides");
    let mut a = join(&cluster, 1, &g);
    let mut b = join(&cluster, 2, &g);
    drain(&mut a);
    drain(&mut b);
    cluster
        .partition(&[&[NodeId(1)], &[NodeId(2)]])
        .expect("split");
    a.mcast(b"from a").expect("sent");
    b.mcast(b"from b").expect("sent");
    let at_a = drain(&mut a);
    let at_b = drain(&mut b);
    assert_eq!(messages(&at_a), vec![(a.local(), b"from a".to_vec())]);
    assert_eq!(messages(&at_b), vec![(b.local(), b"from b".to_vec())]);
    assert_eq!(a.members(), Ok(vec![a.local()]));
    cluster.heal();
    let merge_a = confchgs(&drain(&mut a));
    let merge_b = confchgs(&drain(&mut b));
    let both = vec![a.local(), b.local()];
    assert_eq!(
        merge_a,
        vec![(
            both.clone(),
            vec![change(b.local(), Reason::NodeUp)],
            vec![]
        )]
    );
    assert_eq!(
        merge_b,
        vec![(
            both.clone(),
            vec![change(a.local(), Reason::NodeUp)],
            vec![]
        )]
    );
    a.mcast(b"together").expect("sent");
    assert_eq!(
        messages(&drain(&mut b)),
        vec![(a.local(), b"together".to_vec())]
    );
}

#[test]
fn reshaping_a_partition_reports_departures_before_arrivals() {
    let cluster = SimCluster::new(3);
    let g = group("reshape");
    let mut conns: Vec<SimConnection> = (1..=3).map(|n| join(&cluster, n, &g)).collect();
    let m: Vec<Member> = conns.iter().map(|c| c.local()).collect();
    cluster
        .partition(&[&[NodeId(1)], &[NodeId(2), NodeId(3)]])
        .expect("split");
    for c in &mut conns {
        drain(c);
    }
    cluster
        .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])
        .expect("reshaped");
    assert_eq!(
        confchgs(&drain(&mut conns[1])),
        vec![
            (vec![m[1]], vec![], vec![change(m[2], Reason::NodeDown)]),
            (vec![m[0], m[1]], vec![change(m[0], Reason::NodeUp)], vec![]),
        ]
    );
    assert_eq!(
        confchgs(&drain(&mut conns[0])),
        vec![(vec![m[0], m[1]], vec![change(m[1], Reason::NodeUp)], vec![])]
    );
}

#[test]
fn a_joiner_on_the_other_side_appears_as_nodeup_after_the_heal() {
    let cluster = SimCluster::new(3);
    let g = group("late");
    let mut a = join(&cluster, 1, &g);
    cluster
        .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])
        .expect("split");
    let mut late = join(&cluster, 3, &g);
    drain(&mut a);
    assert_eq!(confchgs(&drain(&mut late))[0].0, vec![late.local()]);
    cluster.heal();
    assert_eq!(
        confchgs(&drain(&mut a)),
        vec![(
            vec![a.local(), late.local()],
            vec![change(late.local(), Reason::NodeUp)],
            vec![]
        )]
    );
}
