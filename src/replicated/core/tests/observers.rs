//! Rule 10: observers. Each test pins one part of the rule; with that part
//! removed from the core, the test fails.

use super::*;

/// The infos `from` multicast, as `p` delivered them.
fn infos_from(p: &Peer, from: Member) -> Vec<Info> {
    let codec = Codec::new(1 << 20).reading(BOTH);
    p.handled
        .iter()
        .filter_map(|position| match position {
            Position::Deliver(sender, bytes) if *sender == from => codec
                .decode_frame_any_version(bytes)
                .and_then(|frame| ReplicaMessage::decode(&codec, frame))
                .ok(),
            _ => None,
        })
        .filter_map(|msg| match msg {
            ReplicaMessage::Info(info) => Some(info),
            _ => None,
        })
        .collect()
}

/// The `Installed` events a peer reported.
fn installs(p: &Peer) -> Vec<(Option<Member>, Vec<Member>)> {
    p.events
        .iter()
        .filter_map(|e| match e {
            ReplicaEvent::Installed {
                sender, receivers, ..
            } => Some((*sender, receivers.clone())),
            _ => None,
        })
        .collect()
}

/// Who a peer restored a snapshot from.
fn restored_from(p: &Peer) -> Vec<Member> {
    p.events
        .iter()
        .filter_map(|e| match e {
            ReplicaEvent::Restored { from, .. } => Some(*from),
            _ => None,
        })
        .collect()
}

/// Two participants (nodes 1 and 2) that took `writes` commands, then an
/// observer on node 3, settled.
fn observed_group(cluster: &SimCluster, delivery: Delivery, writes: u64) -> Vec<Peer> {
    let mut peers = group_of(cluster, 2, delivery);
    for v in 1..=writes {
        peers[(v % 2) as usize].execute(v);
    }
    settle(&mut peers);
    peers.push(Peer::observer(cluster, 3, delivery));
    settle(&mut peers);
    peers
}

const NOT_QUORATE: fn(&mut Info) = |info| {
    info.fact = Some(QuorumState {
        quorate: false,
        ring_id: crate::transport::RingId {
            seq: 1,
            nodeid: NodeId(3),
        },
        nodes: vec![NodeId(3)],
    });
};

#[test]
fn an_observer_says_so_in_its_info_and_puts_in_neither_a_fact_nor_a_founder_flag() {
    let cluster = SimCluster::new(3);
    let peers = observed_group(&cluster, Delivery::Agreed, 2);
    let o = peers[2].member();
    let infos = infos_from(&peers[0], o);
    assert!(!infos.is_empty());
    for info in &infos {
        assert_eq!(info.announcement.role, Role::Observer);
        // Its node reported a quorum before it sent any of them.
        assert_eq!(info.fact, None, "an observer puts no fact in");
        assert!(!info.founder, "an observer founds nothing");
    }
    for p in &peers {
        assert_eq!(p.core.view().len(), 3);
        assert_eq!(p.core.observers(), vec![o]);
        let view = p
            .events
            .iter()
            .rev()
            .find(|e| matches!(e, ReplicaEvent::ViewChanged { .. }));
        assert!(
            matches!(view, Some(ReplicaEvent::ViewChanged { observers, .. }) if *observers == vec![o]),
            "{view:?}"
        );
    }
    // Participants say nothing of the kind.
    for info in infos_from(&peers[2], peers[0].member()) {
        assert_eq!(info.announcement.role, Role::Participant);
    }
}

#[test]
fn an_observer_receives_the_state_and_applies_every_command() {
    let cluster = SimCluster::new(3);
    let mut peers = observed_group(&cluster, Delivery::Agreed, 6);
    assert!(peers[2].core.is_holding() && peers[2].core.is_ready());
    assert_eq!(restored_from(&peers[2]), vec![peers[0].member()]);
    assert_eq!(peers[2].core.state().0.len(), 6);
    for v in 7..=10 {
        peers[(v % 2) as usize].execute(v);
    }
    settle(&mut peers);
    assert_eq!(peers[2].core.state().0.len(), 10);
    assert!(peers.iter().all(|p| p.core.is_primary()));
    assert_agree(&peers);
}

#[test]
fn an_observer_claiming_a_greater_state_neither_wins_nor_sends() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 2, Delivery::Agreed);
    peers[0].execute(1);
    settle(&mut peers);
    let truth = peers[0].core.state().clone();
    // A consistent claim of more commands than anybody applied: it would
    // win any install it counted in.
    let mut observer = Peer::observer(&cluster, 3, Delivery::Agreed);
    observer.tamper = Some(|info| info.state.applied += 1000);
    peers.push(observer);
    settle(&mut peers);
    for p in &peers {
        assert!(p.core.is_holding(), "{} holds nothing", p.member());
        assert_eq!(p.core.state(), &truth);
        let (sender, receivers) = installs(p).pop().expect("an install");
        assert_eq!(sender, Some(peers[0].member()));
        assert_eq!(receivers, vec![peers[2].member()]);
    }
    assert_eq!(restored_from(&peers[2]), vec![peers[0].member()]);
    assert!(restored_from(&peers[0]).is_empty());
}

#[test]
fn the_sender_is_the_lowest_participant_and_an_observer_holding_the_state_keeps_it() {
    // The observer is the lowest member (node 1), the participants are on
    // nodes 2 and 3.
    let cluster = SimCluster::new(3);
    let mut peers = vec![Peer::new(&cluster, 2, Delivery::Agreed)];
    settle(&mut peers);
    peers.push(Peer::new(&cluster, 3, Delivery::Agreed));
    settle(&mut peers);
    peers[0].execute(1);
    settle(&mut peers);
    peers.push(Peer::observer(&cluster, 1, Delivery::Agreed));
    settle(&mut peers);
    let (low, o) = (peers[0].member(), peers[2].member());
    assert!(o < low);
    assert_eq!(restored_from(&peers[2]), vec![low]);
    // A participant joins next to the observer: the observer holds the
    // winner's state, so it is no receiver, and it sends nothing.
    peers.push(Peer::new(&cluster, 1, Delivery::Agreed));
    settle(&mut peers);
    let joiner = peers[3].member();
    for p in &peers {
        let (sender, receivers) = installs(p).pop().expect("an install");
        assert_eq!(sender, Some(low), "at {}", p.member());
        assert_eq!(receivers, vec![joiner], "at {}", p.member());
    }
    assert_eq!(restored_from(&peers[3]), vec![low]);
    assert_eq!(restored_from(&peers[2]), vec![low], "restored once only");
    assert!(peers[2].core.is_holding());
    assert_agree(&peers);
}

#[test]
fn observers_are_in_no_primary_record_and_make_no_majority() {
    // Participants on nodes 1, 2 and 3; the observer on node 3.
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 3, Delivery::Agreed);
    peers.push(Peer::observer(&cluster, 3, Delivery::Agreed));
    settle(&mut peers);
    peers[0].execute(1);
    settle(&mut peers);
    let (p2, p3, o) = (peers[1].member(), peers[2].member(), peers[3].member());
    // The first participant dies: the last primary shrinks to the two
    // left, which go on with the observer.
    peers[0].process.kill().expect("kill");
    settle(&mut peers);
    for p in &peers[1..] {
        assert!(p.core.is_primary());
        let known = p.core.known.as_ref().expect("a last primary");
        assert_eq!(known.members, vec![p2, p3], "at {}", p.member());
    }
    // The second one's node crashes (it may live on elsewhere): the third
    // and the observer are two of the last primary view's three processes,
    // and one of its two participants, which is no majority. The nodes
    // left are quorate.
    cluster.crash_node(NodeId(2)).expect("crash");
    settle(&mut peers);
    assert!(cluster.quorum(NodeId(3)).is_some_and(|q| q.quorate));
    let state = peers[2].core.state().clone();
    for p in &peers[2..] {
        assert_eq!(p.core.view(), [p3, o]);
        assert!(!p.core.is_primary(), "{} is primary", p.member());
    }
    let id = peers[2].execute(2);
    settle(&mut peers);
    assert_eq!(peers[2].replies[&id], Err(ReplicaError::NotPrimary));
    assert_eq!(peers[3].core.state(), &state);
    // Nor does a record that names the observer make it count.
    let lineage: BTreeSet<Member> = [p2, p3, o].into_iter().collect();
    let latest = peers[2].core.known.as_ref().expect("known").epoch;
    assert!(!peers[2]
        .core
        .eligible(Some(latest), &lineage, latest, false));
}

#[test]
fn quorum_facts_of_an_observer_count_for_nothing() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 2, Delivery::Agreed);
    // Every info it sends says its node lost quorum.
    let mut observer = Peer::observer(&cluster, 3, Delivery::Agreed);
    observer.tamper = Some(NOT_QUORATE);
    peers.push(observer);
    // Its first info comes before the members' marks: its announcement is
    // decided where the round completes.
    let o = peers[2].member();
    let is_info = |m: &ReplicaMessage| matches!(m, ReplicaMessage::Info(_));
    step_until(&mut peers[2], |p| delivered(p, o, is_info));
    settle(&mut peers);
    assert!(peers.iter().all(|p| p.core.is_primary()));
    // A member's info in a later round.
    let quiet = silent(&cluster, 1);
    settle(&mut peers);
    assert!(peers.iter().all(|p| p.core.is_primary()));
    // A fact it multicasts.
    let fact = ReplicaMessage::Fact(QuorumState {
        quorate: false,
        ring_id: crate::transport::RingId {
            seq: 1 << 20,
            nodeid: NodeId(3),
        },
        nodes: vec![NodeId(3)],
    });
    assert!(peers[2].mcast(&fact));
    settle(&mut peers);
    for p in &peers {
        assert!(p.core.is_primary(), "at {}", p.member());
        assert_eq!(p.core.refused().observer, 1, "at {}", p.member());
    }
    let id = peers[0].execute(1);
    settle(&mut peers);
    assert_eq!(peers[0].replies[&id], Ok(1));
    assert!(peers[0]
        .core
        .primary_epoch()
        .is_some_and(|e| e.ring_seq < 1 << 20));
    drop(quiet);
}

#[test]
fn a_view_primary_again_after_a_quorum_fact_records_no_observer() {
    let cluster = SimCluster::new(3);
    let mut peers = observed_group(&cluster, Delivery::Agreed, 1);
    let (p1, p2) = (peers[0].member(), peers[1].member());
    let reported = cluster.quorum(NodeId(1)).expect("node 1 is up");
    // The first participant's node reports a lost quorum, then a regained
    // one: the view stops being primary, then becomes primary again.
    for quorate in [false, true] {
        let fact = QuorumState {
            quorate,
            ..reported.clone()
        };
        for action in peers[0].core.handle_quorum(fact) {
            if let Action::Mcast(msg) = action {
                peers[0].mcast(&msg);
            }
        }
        settle(&mut peers);
        assert!(peers.iter().all(|p| p.core.is_primary() == quorate));
    }
    for p in &peers {
        assert!(p
            .events
            .iter()
            .any(|e| matches!(e, ReplicaEvent::PrimaryChanged { primary: true, .. })));
        let known = p.core.known.as_ref().expect("a last primary");
        assert_eq!(known.members, vec![p1, p2], "at {}", p.member());
    }
}

#[test]
fn an_observer_founds_no_group() {
    let cluster = SimCluster::new(3);
    // An observer alone: installed, holding its (empty) state, no primary.
    let mut observer = Peer::observer(&cluster, 1, Delivery::Agreed);
    observer.tamper = Some(|info| info.founder = true);
    let mut peers = vec![observer];
    settle(&mut peers);
    let o = peers[0].member();
    assert!(peers[0].core.is_installed() && peers[0].core.is_holding());
    assert!(peers[0].core.is_ready());
    assert!(!peers[0].core.is_primary());
    assert_eq!(peers[0].core.observers(), vec![o]);
    // A participant that may not found the group joins it: the observer's
    // flag does not found it either.
    let mut joiner = Peer::new(&cluster, 2, Delivery::Agreed);
    joiner.core.founder = false;
    peers.push(joiner);
    settle(&mut peers);
    for p in &peers {
        assert_eq!(p.core.view().len(), 2);
        assert!(p.core.is_installed());
        assert!(!p.core.is_primary(), "at {}", p.member());
    }
}

#[test]
fn safe_delivery_waits_for_participants_only_and_an_observers_ack_is_refused() {
    let cluster = SimCluster::new(3);
    let mut peers = observed_group(&cluster, Delivery::Safe, 0);
    let id = peers[0].execute(1);
    while peers[0].step() {}
    // The observer acknowledges everything at once: that releases
    // nothing, the other participant has not acknowledged yet.
    assert!(peers[2].mcast(&ReplicaMessage::Ack(u64::MAX)));
    while peers[0].step() {}
    assert!(peers[0].replies.is_empty());
    // The participants' acks release it; the observer sends none.
    settle(&mut peers);
    assert_eq!(peers[0].replies[&id], Ok(1));
    for p in &peers {
        assert_eq!(p.core.refused().observer, 1, "at {}", p.member());
    }
    assert_agree(&peers);
}

#[test]
fn a_command_from_an_observer_is_refused_on_every_member() {
    let cluster = SimCluster::new(3);
    let mut peers = observed_group(&cluster, Delivery::Agreed, 2);
    let before = peers[0].core.state_id();
    // Its replica refuses to send one; a process can still forge one.
    let id = peers[2].execute(99);
    settle(&mut peers);
    assert_eq!(peers[2].replies[&id], Err(ReplicaError::Observer));
    for p in &peers {
        assert_eq!(p.core.state_id(), before, "{} applied it", p.member());
        assert_eq!(p.core.refused().observer, 1, "at {}", p.member());
    }
}

#[test]
fn observers_alone_are_no_primary_keep_their_state_and_carry_no_history() {
    let cluster = SimCluster::new(3);
    let mut peers = observed_group(&cluster, Delivery::Agreed, 3);
    peers.push(Peer::observer(&cluster, 1, Delivery::Agreed));
    settle(&mut peers);
    let state = peers[0].core.state().clone();
    let genesis = peers[0].core.state_id().genesis;
    // Both participants die: two observers remain.
    peers[0].process.kill().expect("kill");
    peers[1].process.kill().expect("kill");
    settle(&mut peers);
    let observers = vec![peers[3].member(), peers[2].member()];
    for p in &peers[2..] {
        assert_eq!(p.core.view(), observers);
        assert_eq!(p.core.observers(), observers);
        assert!(p.core.is_installed() && !p.core.is_primary());
        assert!(p.core.is_holding(), "{} keeps its state", p.member());
        assert_eq!(p.core.state(), &state);
    }
    // A participant comes: the observers' copy is no history of the
    // group's (nobody that counts holds it), so it founds the group
    // afresh and the observers receive that state.
    peers.push(Peer::new(&cluster, 2, Delivery::Agreed));
    settle(&mut peers);
    for p in &peers[2..] {
        assert!(p.core.is_primary() && p.core.is_holding());
        assert!(p.core.state().0.is_empty());
        assert_ne!(p.core.state_id().genesis, genesis);
    }
    assert_agree(&peers);
}

#[test]
fn an_observers_claims_are_not_judged_and_count_for_nothing() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 2, Delivery::Agreed);
    peers[0].execute(1);
    settle(&mut peers);
    let truth = peers[0].core.state().clone();
    // Every info it sends claims a primary far past the stream's (its
    // first, before it knows any, contradicts itself as well).
    let mut observer = Peer::observer(&cluster, 3, Delivery::Agreed);
    observer.lie = true;
    peers.push(observer);
    settle(&mut peers);
    let o = peers[2].member();
    for p in &peers {
        assert!(p.core.view().contains(&o), "admitted at {}", p.member());
        let refused = p.core.refused();
        assert_eq!((refused.epoch, refused.inconsistent), (0, 0));
        assert!(p.core.is_primary());
        assert!(p.core.primary_epoch().is_some_and(|e| e.term < 1 << 40));
        assert_eq!(p.core.state(), &truth);
    }
    assert!(peers[2].core.is_holding());
}

#[test]
fn an_observers_claims_do_not_raise_what_an_announcement_may_claim() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 2, Delivery::Agreed);
    peers[0].execute(1);
    settle(&mut peers);
    let mut observer = Peer::observer(&cluster, 3, Delivery::Agreed);
    observer.lie = true;
    peers.push(observer);
    settle(&mut peers);
    let before: Vec<StateId> = peers[..2].iter().map(|p| p.core.state_id()).collect();
    // An outsider announces itself with a history as far past the stream
    // as the observer claims: its info is delivered in the round its
    // confchg starts, next to the observer's.
    let mut outsider = silent(&cluster, 1);
    let me = outsider.local();
    let huge = PrimaryEpoch {
        ring_seq: 1 << 40,
        term: 1 << 40,
    };
    let info = ReplicaMessage::Info(Info {
        announcement: Announcement::this_build(),
        fact: None,
        known: Some(PrimaryRecord {
            epoch: huge,
            members: vec![me],
        }),
        state: StateId {
            epoch: huge,
            applied: 1 << 40,
            chain: 1,
            genesis: 1,
        },
        founder: true,
        view: view_tag(&raw_view(&cluster)),
        round: 0,
        members: None,
        merged: Vec::new(),
        mark: 1,
        succeeds: None,
    });
    let codec = Codec::new(1 << 20);
    for msg in [ReplicaMessage::Mark(1), info] {
        outsider
            .mcast(&codec.encode(Kind::Replicated, &msg).expect("encode"))
            .expect("sent");
    }
    settle(&mut peers);
    for (p, b) in peers.iter().zip(&before) {
        assert!(!p.core.view().contains(&me), "admitted at {}", p.member());
        assert_eq!(p.core.refused().epoch, 1, "at {}", p.member());
        assert_eq!(p.core.state_id().applied, b.applied);
        assert!(p.core.primary_epoch().is_some_and(|e| e.term < 1 << 40));
    }
}

#[test]
fn an_observers_info_that_contradicts_itself_still_admits_it() {
    let cluster = SimCluster::new(3);
    let mut peers = group_of(&cluster, 2, Delivery::Agreed);
    peers[0].execute(1);
    settle(&mut peers);
    // A state of a primary it says it knows nothing of.
    let mut observer = Peer::observer(&cluster, 3, Delivery::Agreed);
    observer.tamper = Some(|info| {
        info.known = None;
        info.state.epoch = PrimaryEpoch {
            ring_seq: 1,
            term: 1,
        };
    });
    peers.push(observer);
    settle(&mut peers);
    let o = peers[2].member();
    for p in &peers {
        assert!(p.core.view().contains(&o), "admitted at {}", p.member());
        assert_eq!(p.core.refused().inconsistent, 0);
    }
    assert!(peers[2].core.is_holding());
    assert_agree(&peers);
}
