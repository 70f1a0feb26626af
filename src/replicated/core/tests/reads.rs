//! Rule 12: linearizable reads at a barrier. Each test pins one part of
//! the rule; with that part removed from the core, the test fails.

use super::*;
use crate::replicated::messages::READ_VERSION;
use crate::wire::MIN_PROTOCOL_VERSION;

/// How many of `p`'s own barriers it delivered.
fn own_barriers(p: &Peer) -> usize {
    let codec = Codec::new(1 << 20);
    p.handled
        .iter()
        .filter(|position| match position {
            Position::Deliver(sender, bytes) if *sender == p.member() => codec
                .decode_frame_any_version(bytes)
                .and_then(|frame| ReplicaMessage::decode(&codec, frame))
                .is_ok_and(|msg| matches!(msg, ReplicaMessage::Barrier(_))),
            _ => false,
        })
        .count()
}

/// Steps `p` alone until it has nothing more to handle.
fn drain(p: &mut Peer) {
    while p.step() {}
}

#[test]
fn a_read_sees_every_command_replied_to_before_it_was_asked() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 3, Delivery::Agreed);
    let ids: Vec<u64> = (0..5).map(|v| peers[0].execute(v)).collect();
    // The writer has its replies; the reader has delivered none of it.
    drain(&mut peers[0]);
    assert!(ids.iter().all(|id| peers[0].replies[id].is_ok()));
    assert!(peers[2].core.state().0.is_empty(), "the reader lags");
    let read = peers[2].read();
    settle(&mut peers);
    assert_eq!(peers[2].read_answers[&read], Ok(5));
    // Nothing was applied for it: the states are the writer's.
    assert_agree(&peers);
    assert_eq!(peers[0].core.state().0.len(), 5);
}

#[test]
fn a_barrier_from_another_process_answers_no_read() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 3, Delivery::Agreed);
    // Another process multicasts the number this member's first barrier
    // will carry, ahead of it; a command follows it, then the real one.
    peers[1].mcast(&ReplicaMessage::Barrier(1));
    peers[1].execute(7);
    drain(&mut peers[1]);
    let read = peers[0].read();
    // Only the forged barrier and the command are ahead of it.
    assert!(peers[0].step() && peers[0].step());
    assert!(
        peers[0].read_values.is_empty(),
        "evaluated at a forged barrier"
    );
    settle(&mut peers);
    assert_eq!(peers[0].read_answers[&read], Ok(1));
    assert_agree(&peers);
}

#[test]
fn a_safe_read_waits_until_a_majority_acknowledged_what_it_read() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 3, Delivery::Safe);
    let cmd = peers[0].execute(1);
    let read = peers[0].read();
    // The reader alone: the command, its own acknowledgement and its
    // barrier come back; nobody else acknowledged.
    drain(&mut peers[0]);
    assert_eq!(peers[0].read_values.get(&read), Some(&1));
    assert!(!peers[0].read_answers.contains_key(&read));
    assert!(!peers[0].replies.contains_key(&cmd));
    // One more member's acknowledgement is a majority of three.
    drain(&mut peers[1]);
    drain(&mut peers[0]);
    assert_eq!(peers[0].read_answers[&read], Ok(1));
    assert_eq!(peers[0].replies[&cmd], Ok(1));
    settle(&mut peers);
}

#[test]
fn an_agreed_read_is_answered_where_its_barrier_comes_back() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 3, Delivery::Agreed);
    peers[0].execute(1);
    let read = peers[0].read();
    drain(&mut peers[0]);
    assert_eq!(peers[0].read_answers[&read], Ok(1));
    settle(&mut peers);
}

#[test]
fn a_read_whose_state_does_not_survive_the_view_change_fails_unanswered() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 3, Delivery::Safe);
    peers[2].execute(1);
    let read = peers[2].read();
    drain(&mut peers[2]);
    assert_eq!(peers[2].read_values.get(&read), Some(&1));
    // Cut off before anyone else acknowledged: its side is a minority.
    cluster
        .partition(&[&[NodeId(1), NodeId(2)], &[NodeId(3)]])
        .expect("partition");
    settle(&mut peers);
    assert!(!peers[2].core.is_primary());
    assert_eq!(peers[2].read_answers[&read], Err(ReplicaError::Uncertain));
    // A read there now: not primary.
    let again = peers[2].read();
    settle(&mut peers);
    assert_eq!(peers[2].read_answers[&again], Err(ReplicaError::NotPrimary));
    cluster.heal();
    settle(&mut peers);
    assert_agree(&peers);
}

#[test]
fn a_read_whose_barrier_lands_in_an_install_is_answered_after_it() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 2, Delivery::Agreed);
    for v in 0..3 {
        peers[1].execute(v);
    }
    settle(&mut peers);
    // A joiner's confchg is ahead of the barrier: it lands mid-install.
    peers.push(Peer::new(&cluster, 3, Delivery::Agreed));
    let read = peers[0].read();
    settle(&mut peers);
    assert_eq!(peers[0].read_answers[&read], Ok(3));
    // Parked, then sent again (once per install round it lands in: the
    // joiner's admission starts a second one).
    assert!(own_barriers(&peers[0]) >= 2, "answered without parking");
    // The joiner reads the state it received.
    let joined = peers[2].read();
    settle(&mut peers);
    assert_eq!(peers[2].read_answers[&joined], Ok(3));
    assert_agree(&peers);
}

#[test]
fn an_observer_reads_linearizably_too() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 2, Delivery::Safe);
    peers.push(Peer::observer(&cluster, 3, Delivery::Safe));
    settle(&mut peers);
    peers[0].execute(4);
    drain(&mut peers[0]);
    drain(&mut peers[1]);
    drain(&mut peers[0]);
    let read = peers[2].read();
    settle(&mut peers);
    assert_eq!(peers[2].read_answers[&read], Ok(1));
}

#[test]
fn reads_are_refused_before_membership_and_in_a_group_of_an_older_build() {
    let cluster = SimCluster::new(3);
    let older = Versions {
        min: MIN_PROTOCOL_VERSION,
        max: READ_VERSION - 1,
    };
    let mut peers = vec![Peer::speaking(&cluster, 1, Delivery::Agreed, older)];
    // Before its first confchg, a replica is nobody's member.
    assert_eq!(
        peers[0].core.request_read(vec![1]).err(),
        Some(ReplicaError::NotMember)
    );
    settle(&mut peers);
    peers.push(Peer::new(&cluster, 2, Delivery::Agreed));
    settle(&mut peers);
    for p in peers.iter_mut() {
        let read = p.read();
        assert_eq!(
            p.read_answers[&read],
            Err(ReplicaError::ReadsUnsupported {
                version: READ_VERSION - 1
            })
        );
    }
    // A barrier written at this version anyway: the older member's
    // runtime drops it unread, and nothing is decided on it.
    let before = peers[0].handled.len();
    let bytes = ReplicaMessage::Barrier(1)
        .encode(&Codec::new(1 << 20))
        .expect("encode");
    peers[1].conn.mcast(&bytes).expect("mcast");
    settle(&mut peers);
    assert_eq!(peers[0].handled.len(), before + 1);
    assert_agree(&peers);
}

#[test]
fn reads_past_the_cap_fail_at_once() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 1, Delivery::Agreed);
    peers[0].core.max_held = 2;
    let first = peers[0].read();
    let second = peers[0].read();
    let third = peers[0].read();
    assert_eq!(
        peers[0].read_answers.get(&third),
        Some(&Err(ReplicaError::Overloaded))
    );
    settle(&mut peers);
    assert_eq!(peers[0].read_answers[&first], Ok(0));
    assert_eq!(peers[0].read_answers[&second], Ok(0));
    assert_eq!(peers[0].core.reads.waiting(), 0);
}

#[test]
fn a_read_evaluated_on_a_replica_then_found_diverged_fails_unanswered() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 3, Delivery::Safe);
    peers[2].execute(1);
    let read = peers[2].read();
    drain(&mut peers[2]);
    assert_eq!(peers[2].read_values.get(&read), Some(&1));
    // A check decided here that this replica diverged (rule 11).
    let (sender, me) = (peers[0].member(), peers[2].member());
    let mut out = Vec::new();
    peers[2].core.resync(sender, BTreeSet::from([me]), &mut out);
    peers[2].act(out, &Position::Local);
    assert_eq!(peers[2].read_answers[&read], Err(ReplicaError::Uncertain));
}
