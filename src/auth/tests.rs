use super::*;
use crate::transport::sim::{SimCluster, SimConnection};
use crate::transport::{NodeId, Transport};

fn key(byte: u8) -> GroupKey {
    GroupKey::from_bytes([byte; 32])
}

fn group() -> GroupName {
    GroupName::new("auth-unit").expect("name")
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn golden_bytes_pin_the_layout() {
    let envelope = b"ACPG\x01\x01\x00\x00body";
    let mut sealed = Vec::new();
    seal(
        &key(7),
        &group(),
        Member::new(2, 0x0102_0304),
        envelope,
        &mut sealed,
    );

    // The tag input, written out by hand from the module docs.
    let mut input = b"ACPK".to_vec();
    input.push(9);
    input.extend_from_slice(b"auth-unit");
    input.extend_from_slice(&[2, 0, 0, 0]);
    input.extend_from_slice(&[4, 3, 2, 1]);
    input.extend_from_slice(envelope);
    let tag = blake3::keyed_hash(&[7; 32], &input);

    assert_eq!(&sealed[..4], b"ACPK");
    assert_eq!(&sealed[4..36], tag.as_bytes());
    assert_eq!(&sealed[36..], envelope);
    assert_eq!(sealed.len(), AUTH_OVERHEAD + envelope.len());
    // Pinned: a change to the layout, the key or the hash breaks this.
    assert_eq!(
        hex(&sealed[4..36]),
        "f6e63df2893455a7d39dfcedb3447ba4f89fdd24cdc36c4fd8cb689d4f7a4992"
    );
}

#[test]
fn derived_keys_are_pinned_and_distinct() {
    let a = GroupKey::from_passphrase("correct horse battery staple");
    let b = GroupKey::from_file_contents(b"correct horse battery staple").expect("key");
    assert_ne!(
        a, b,
        "passphrase and file derivations use distinct contexts"
    );
    assert_eq!(
        hex(&a.0),
        "f0b5247807f240c02d8e3f1137bb177625da9ead856bb4d5fda39acb07f24dab"
    );
    assert_eq!(
        GroupKey::from_file_contents(b"").unwrap_err(),
        KeyError::Empty
    );
    assert_ne!(
        GroupKey::from_file_contents(b"k\n").expect("key"),
        GroupKey::from_file_contents(b"k").expect("key")
    );
}

#[test]
fn debug_prints_no_key_material() {
    let k = GroupKey::from_bytes([0xab; 32]);
    let shown = format!("{k:?} {:?}", Some(k.clone()));
    assert!(!shown.to_lowercase().contains("ab"), "{shown}");
    assert!(!shown.contains("171"), "{shown}");
    assert!(shown.contains("redacted"));
}

#[test]
fn open_accepts_the_sealed_message_and_strips_the_mac() {
    let from = Member::new(1, 10);
    let mut bytes = Vec::new();
    seal(&key(1), &group(), from, b"hello", &mut bytes);
    assert_eq!(open(&key(1), &group(), from, &mut bytes), Ok(()));
    assert_eq!(bytes, b"hello");
}

/// What is checked, under which key, group and sender, the bytes, and
/// the verdict.
type Case = (
    &'static str,
    GroupKey,
    GroupName,
    Member,
    Vec<u8>,
    Unauthenticated,
);

#[test]
fn open_refuses_every_mismatch_and_leaves_the_bytes() {
    let from = Member::new(1, 10);
    let mut sealed = Vec::new();
    seal(&key(1), &group(), from, b"hello", &mut sealed);
    let other_group = GroupName::new("auth-unit2").expect("name");
    let cases: Vec<Case> = vec![
        (
            "other key",
            key(2),
            group(),
            from,
            sealed.clone(),
            Unauthenticated::BadTag,
        ),
        (
            "other group",
            key(1),
            other_group,
            from,
            sealed.clone(),
            Unauthenticated::BadTag,
        ),
        (
            "other pid",
            key(1),
            group(),
            Member::new(1, 11),
            sealed.clone(),
            Unauthenticated::BadTag,
        ),
        (
            "other node",
            key(1),
            group(),
            Member::new(2, 10),
            sealed.clone(),
            Unauthenticated::BadTag,
        ),
        (
            "no mac",
            key(1),
            group(),
            from,
            b"ACPG\x01\x01\x00\x00 an envelope without a mac".to_vec(),
            Unauthenticated::NoMac,
        ),
        (
            "empty",
            key(1),
            group(),
            from,
            Vec::new(),
            Unauthenticated::Truncated,
        ),
        (
            "cut in the tag",
            key(1),
            group(),
            from,
            sealed[..20].to_vec(),
            Unauthenticated::Truncated,
        ),
        (
            "cut in the body",
            key(1),
            group(),
            from,
            sealed[..sealed.len() - 1].to_vec(),
            Unauthenticated::BadTag,
        ),
        (
            "short foreign",
            key(1),
            group(),
            from,
            b"hello".to_vec(),
            Unauthenticated::NoMac,
        ),
    ];
    for (what, k, g, sender, mut bytes, want) in cases {
        let before = bytes.clone();
        assert_eq!(open(&k, &g, sender, &mut bytes), Err(want), "{what}");
        assert_eq!(bytes, before, "{what}: bytes untouched");
    }
    let mut flipped = sealed.clone();
    for i in 0..flipped.len() {
        flipped[i] ^= 0x01;
        let mut b = flipped.clone();
        assert!(
            open(&key(1), &group(), from, &mut b).is_err(),
            "bit flipped at {i}"
        );
        flipped[i] ^= 0x01;
    }
}

fn next(conn: &mut impl Connection) -> Option<TransportEvent> {
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    match conn.poll_event(&mut cx) {
        Poll::Ready(Ok(e)) => Some(e),
        Poll::Ready(Err(e)) => panic!("{e}"),
        Poll::Pending => None,
    }
}

fn deliveries(conn: &mut impl Connection) -> Vec<(Member, Vec<u8>)> {
    let mut out = Vec::new();
    while let Some(event) = next(conn) {
        if let TransportEvent::Deliver { from, bytes } = event {
            out.push((from, bytes));
        }
    }
    out
}

fn raw(cluster: &SimCluster, node: u32) -> SimConnection {
    cluster
        .process(NodeId(node))
        .expect("up")
        .join(&group())
        .expect("join")
}

#[test]
fn the_wrapper_passes_keyed_messages_and_drops_the_rest() {
    let cluster = SimCluster::new(2);
    let a_count = Arc::new(AtomicU64::new(0));
    let mut a = Authenticated::new(raw(&cluster, 1), key(1), a_count.clone());
    let mut b = Authenticated::new(raw(&cluster, 2), key(1), Arc::new(AtomicU64::new(0)));
    let mut spy = raw(&cluster, 2);
    let mut stranger = Authenticated::new(raw(&cluster, 1), key(9), Arc::new(AtomicU64::new(0)));
    assert_eq!(a.max_message_size(), spy.max_message_size() - AUTH_OVERHEAD);

    a.mcast(b"from a").expect("mcast");
    let captured = deliveries(&mut spy);
    let (_, sealed) = captured
        .last()
        .expect("the spy sees the keyed bytes")
        .clone();
    assert!(sealed.starts_with(b"ACPK"));
    spy.mcast(&sealed).expect("replayed as the spy's own");
    spy.mcast(b"ACPG\x01\x01\x00\x00forged").expect("no mac");
    stranger.mcast(b"other key").expect("mcast");
    b.mcast(b"from b").expect("mcast");

    let seen: Vec<Vec<u8>> = deliveries(&mut a).into_iter().map(|(_, b)| b).collect();
    assert_eq!(seen, vec![b"from a".to_vec(), b"from b".to_vec()]);
    assert_eq!(a.dropped(), 3);
    assert_eq!(a_count.load(Ordering::Relaxed), 3);
    let at_b: Vec<Vec<u8>> = deliveries(&mut b).into_iter().map(|(_, b)| b).collect();
    assert_eq!(at_b, vec![b"from a".to_vec(), b"from b".to_vec()]);
    assert_eq!(b.dropped(), 3);
}

#[test]
fn a_flood_of_forgeries_yields_instead_of_looping() {
    let cluster = SimCluster::new(1);
    let mut a = Authenticated::new(raw(&cluster, 1), key(1), Arc::new(AtomicU64::new(0)));
    let mut forger = raw(&cluster, 1);
    // The forger's join.
    let _ = deliveries(&mut a);
    for _ in 0..(DROPS_PER_POLL * 2 + 1) {
        forger.mcast(b"junk").expect("mcast");
    }
    a.mcast(b"real").expect("mcast");
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    assert!(
        a.poll_event(&mut cx).is_pending(),
        "first poll gives up after a budget"
    );
    assert_eq!(a.dropped(), DROPS_PER_POLL as u64);
    let rest = deliveries(&mut a);
    assert_eq!(rest.len(), 0, "still within the second budget");
    let rest = deliveries(&mut a);
    assert_eq!(
        rest.into_iter().map(|(_, b)| b).collect::<Vec<_>>(),
        vec![b"real".to_vec()]
    );
    assert_eq!(a.dropped(), (DROPS_PER_POLL * 2 + 1) as u64);
}

#[test]
fn an_oversized_envelope_is_refused_before_sealing() {
    let cluster = SimCluster::new(1);
    let mut a = Authenticated::new(raw(&cluster, 1), key(1), Arc::new(AtomicU64::new(0)));
    let max = a.max_message_size();
    assert!(matches!(
        a.mcast(&vec![0; max + 1]),
        Err(TransportError::MessageTooLarge { .. })
    ));
    a.mcast(&vec![0; max])
        .expect("the largest envelope fits with its mac");
}
