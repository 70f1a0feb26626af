//! Flow control in the sim backend: whatever the interleaving of sends and
//! reads, a sender that retries refused messages in order loses nothing,
//! reorders nothing, and every member reads the same sequence.

use actix_cpg::transport::sim::{FlowControlPolicy, SimCluster, SimConnection};
use actix_cpg::transport::{
    Connection, FlowControl, GroupName, Member, NodeId, Transport, TransportError, TransportEvent,
};
use proptest::prelude::*;

struct Member3 {
    conn: SimConnection,
    pending: Vec<Vec<u8>>,
    queued: Vec<Vec<u8>>,
    read: Vec<(Member, Vec<u8>)>,
    refused: usize,
}

impl Member3 {
    fn read_one(&mut self) -> bool {
        match self.conn.try_next_event() {
            Ok(Some(TransportEvent::Deliver { from, bytes })) => {
                self.read.push((from, bytes));
                true
            }
            Ok(Some(_)) => true,
            Ok(None) => false,
            Err(err) => panic!("stream ended: {err}"),
        }
    }

    fn flush(&mut self) -> bool {
        let mut progressed = false;
        while let Some(first) = self.pending.first() {
            let blocked = self.conn.flow_control() == FlowControl::Enabled;
            match self.conn.mcast(first) {
                Ok(()) => {
                    assert!(
                        !blocked,
                        "flow_control said Enabled but the send went through"
                    );
                    self.pending.remove(0);
                    progressed = true;
                }
                Err(TransportError::TryAgain) => {
                    assert!(blocked, "TryAgain while flow_control said Disabled");
                    self.refused += 1;
                    break;
                }
                Err(err) => panic!("unexpected {err}"),
            }
        }
        progressed
    }
}

fn run(ops: &[(usize, u8)], backlog: usize, policy: FlowControlPolicy) -> (Vec<Member3>, usize) {
    let cluster = SimCluster::builder(3)
        .max_backlog(backlog)
        .flow_control(policy)
        .build();
    let g = GroupName::new("flow").expect("valid name");
    let mut members: Vec<Member3> = (1..=3)
        .map(|n| Member3 {
            conn: cluster
                .process(NodeId(n))
                .expect("up")
                .join(&g)
                .expect("joined"),
            pending: Vec::new(),
            queued: Vec::new(),
            read: Vec::new(),
            refused: 0,
        })
        .collect();
    for (serial, &(who, action)) in ops.iter().enumerate() {
        let m = &mut members[who % 3];
        match action % 4 {
            0 | 1 => {
                let bytes = format!("{}:{serial}", m.conn.local()).into_bytes();
                m.queued.push(bytes.clone());
                m.pending.push(bytes);
                m.flush();
            }
            2 => {
                m.read_one();
            }
            _ => while m.read_one() {},
        }
    }
    loop {
        for m in &mut members {
            while m.read_one() {}
        }
        let mut progressed = false;
        for m in &mut members {
            progressed |= m.flush();
        }
        if !progressed {
            break;
        }
    }
    let refused = members.iter().map(|m| m.refused).sum();
    (members, refused)
}

fn check(members: &[Member3]) -> Result<(), TestCaseError> {
    let total: usize = members.iter().map(|m| m.queued.len()).sum();
    for m in members {
        prop_assert!(m.pending.is_empty(), "a retried message never went through");
        prop_assert_eq!(m.read.len(), total);
        prop_assert_eq!(&m.read, &members[0].read);
    }
    for m in members {
        let own: Vec<&Vec<u8>> = members[0]
            .read
            .iter()
            .filter(|(from, _)| *from == m.conn.local())
            .map(|(_, bytes)| bytes)
            .collect();
        let queued: Vec<&Vec<u8>> = m.queued.iter().collect();
        prop_assert_eq!(own, queued);
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn own_backlog_retries_lose_and_reorder_nothing(
        ops in proptest::collection::vec((0usize..3, 0u8..4), 1..150),
        backlog in 1usize..5,
    ) {
        let (members, _) = run(&ops, backlog, FlowControlPolicy::OwnBacklog);
        check(&members)?;
    }

    #[test]
    fn slowest_member_retries_lose_and_reorder_nothing(
        ops in proptest::collection::vec((0usize..3, 0u8..4), 1..150),
        backlog in 1usize..5,
    ) {
        let (members, _) = run(&ops, backlog, FlowControlPolicy::SlowestMember);
        check(&members)?;
    }
}

#[test]
fn a_burst_without_reading_is_refused_under_both_policies() {
    let burst: Vec<(usize, u8)> = (0..20).map(|_| (0, 0)).collect();
    for policy in [
        FlowControlPolicy::OwnBacklog,
        FlowControlPolicy::SlowestMember,
    ] {
        let (members, refused) = run(&burst, 4, policy);
        assert!(
            refused > 0,
            "{policy:?}: a burst of 20 over a window of 4 must be refused"
        );
        check(&members).expect("nothing lost");
    }
}
