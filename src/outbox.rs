//! The send side shared by the replicated-state and election runtimes: a
//! bounded send window over three lanes, `TRY_AGAIN` kept as backpressure.
//!
//! ```text
//!  control (view install, quorum facts, stability acks)  ─┐  first, FIFO
//!  user    (commands, each with a token for its caller)   ─┼─► mcast while
//!  bulk    (snapshot chunks, at most `bulk_window` out)   ─┘   in_flight < window
//! ```
//!
//! Why three lanes: protocol messages decide when a view is usable, so they
//! never wait behind user traffic; a large state transfer is cut into chunks
//! and only `bulk_window` of them are in flight at once, so commands (ours
//! and everyone else's) are ordered between chunks and never wait for more
//! than one chunk. A message refused with `TRY_AGAIN` stays at the head of
//! its lane and is retried before anything behind it, so nothing is lost or
//! reordered within a lane.
//!
//! Packing (only when the runtime sets a [`Packing`]): a flush that finds
//! several control or user messages queued sends them as one
//! [`crate::wire::Kind::Batch`] multicast, in the order they would have
//! gone one by one, up to the packing's caps. Nothing waits for company: a
//! message queued alone goes alone, so batches form only from what piled
//! up while the window was full or during one turn of the runtime (Nagle
//! without the delay). Bulk chunks always go alone.

use std::collections::VecDeque;

use crate::transport::{Connection, TransportError};
use crate::wire::{self, Codec, BATCH_ENTRY_OVERHEAD, HEADER_LEN};

/// How queued messages are packed into one multicast.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Packing {
    /// Writes the batch header.
    pub(crate) codec: Codec,
    /// Most messages in one batch.
    pub(crate) max_messages: usize,
    /// Most bytes of a batch, header included.
    pub(crate) max_bytes: usize,
}

/// Which lane a message went out on (to account for it when it comes back).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Lane {
    Control,
    User,
    Bulk,
}

/// Produces the next encoded chunk of a bulk transfer, or `None` when done.
pub(crate) type BulkSource = Box<dyn FnMut() -> Option<Vec<u8>>>;

/// Queued outgoing messages and the window of those not yet delivered back.
pub(crate) struct Outbox<T> {
    /// Protocol messages; `true` marks one that survives a purge.
    control: VecDeque<(Vec<u8>, bool)>,
    user: VecDeque<(Vec<u8>, T)>,
    bulk: Option<BulkSource>,
    /// A chunk taken from `bulk` that the transport refused; sent first.
    bulk_next: Option<Vec<u8>>,
    /// Lanes of our own messages multicast and not yet delivered back, in
    /// send order (our own messages come back in the order we sent them).
    in_flight: VecDeque<Lane>,
    bulk_in_flight: usize,
    window: usize,
    bulk_window: usize,
    blocked: bool,
    /// `None`: one message per multicast.
    packing: Option<Packing>,
    /// While packing: for each multicast since the last
    /// [`Outbox::take_user_multicasts`] that carried user messages, how
    /// many.
    user_multicasts: Vec<usize>,
}

impl<T> Outbox<T> {
    /// `window` messages in flight in all; at most `bulk_window` of them
    /// chunks of a bulk transfer.
    pub(crate) fn new(window: usize, bulk_window: usize) -> Self {
        Outbox {
            control: VecDeque::new(),
            user: VecDeque::new(),
            bulk: None,
            bulk_next: None,
            in_flight: VecDeque::new(),
            bulk_in_flight: 0,
            window: window.max(1),
            bulk_window: bulk_window.clamp(1, window.max(1)),
            blocked: false,
            packing: None,
            user_multicasts: Vec::new(),
        }
    }

    /// While packing, how many user messages each multicast since the last
    /// call carried (only those that carried any), for the metrics.
    pub(crate) fn take_user_multicasts(&mut self) -> Vec<usize> {
        std::mem::take(&mut self.user_multicasts)
    }

    /// Packs what is queued into batches from the next flush on (`None`:
    /// one message per multicast).
    pub(crate) fn set_packing(&mut self, packing: Option<Packing>) {
        self.packing = packing.filter(|p| p.max_messages > 1);
    }

    /// Queues a protocol message; a `sticky` one survives [`Outbox::purge`].
    pub(crate) fn push_control(&mut self, bytes: Vec<u8>, sticky: bool) {
        self.control.push_back((bytes, sticky));
    }

    pub(crate) fn push_user(&mut self, bytes: Vec<u8>, token: T) {
        self.user.push_back((bytes, token));
    }

    /// Starts a bulk transfer, replacing any unsent rest of an earlier one.
    pub(crate) fn set_bulk(&mut self, source: BulkSource) {
        self.bulk = Some(source);
        self.bulk_next = None;
    }

    /// Drops every non-sticky control message and bulk chunk not yet
    /// multicast (a view change made them obsolete). User messages stay
    /// queued.
    pub(crate) fn purge(&mut self) {
        self.control.retain(|(_, sticky)| *sticky);
        self.bulk = None;
        self.bulk_next = None;
    }

    /// One of our own messages was delivered back to us.
    pub(crate) fn own_delivered(&mut self) {
        if let Some(Lane::Bulk) = self.in_flight.pop_front() {
            self.bulk_in_flight = self.bulk_in_flight.saturating_sub(1);
        }
    }

    /// Whether the last flush stopped at `TRY_AGAIN` with messages left.
    pub(crate) fn blocked(&self) -> bool {
        self.blocked && self.has_queued()
    }

    /// Whether anything waits to be multicast.
    pub(crate) fn has_queued(&self) -> bool {
        !self.control.is_empty()
            || !self.user.is_empty()
            || self.bulk.is_some()
            || self.bulk_next.is_some()
    }

    /// Messages multicast and not yet delivered back.
    pub(crate) fn in_flight(&self) -> usize {
        self.in_flight.len()
    }

    /// Messages queued and not yet multicast (a bulk transfer under way
    /// counts one).
    pub(crate) fn queued(&self) -> usize {
        self.control.len()
            + self.user.len()
            + usize::from(self.bulk.is_some() || self.bulk_next.is_some())
    }

    /// Takes every queued user message (the runtime is closing).
    pub(crate) fn drain_user(&mut self) -> Vec<T> {
        self.user.drain(..).map(|(_, t)| t).collect()
    }

    /// Multicasts while the window has room. User messages that were sent,
    /// or refused for good (too large), are reported through `sent` with
    /// their outcome. Stops at the first `TRY_AGAIN` (then [`Outbox::blocked`]
    /// says so); any other transport error is returned (the connection is
    /// unusable).
    pub(crate) fn flush(
        &mut self,
        conn: &mut dyn Connection,
        sent: &mut Vec<(T, Result<(), TransportError>)>,
    ) -> Result<(), TransportError> {
        self.blocked = false;
        // Set when the transport found a batch too large: the head message
        // goes alone once.
        let mut alone = false;
        while self.in_flight.len() < self.window {
            let lane = if !self.control.is_empty() {
                Lane::Control
            } else if self.bulk_in_flight < self.bulk_window && self.take_bulk() {
                Lane::Bulk
            } else if !self.user.is_empty() {
                Lane::User
            } else {
                break;
            };
            if lane != Lane::Bulk && !std::mem::take(&mut alone) {
                if let Some(packing) = self.packing {
                    let (controls, users, len) = self.batch_of(lane, packing);
                    if controls + users >= 2 {
                        let mut batch = packing.codec.begin_batch(len);
                        let queued = self.control.iter().take(controls).map(|(b, _)| b);
                        for bytes in queued.chain(self.user.iter().take(users).map(|(b, _)| b)) {
                            wire::push_to_batch(&mut batch, bytes);
                        }
                        match conn.mcast(&batch) {
                            Ok(()) => {
                                self.in_flight.push_back(lane);
                                self.control.drain(..controls);
                                for (_, token) in self.user.drain(..users) {
                                    sent.push((token, Ok(())));
                                }
                                if users > 0 {
                                    self.user_multicasts.push(users);
                                }
                            }
                            Err(TransportError::TryAgain) => {
                                self.blocked = true;
                                return Ok(());
                            }
                            Err(TransportError::MessageTooLarge { .. }) => alone = true,
                            Err(e) => return Err(e),
                        }
                        continue;
                    }
                }
            }
            let bytes: &[u8] = match lane {
                Lane::Control => &self.control[0].0,
                Lane::Bulk => self.bulk_next.as_deref().unwrap_or_default(),
                Lane::User => &self.user[0].0,
            };
            match conn.mcast(bytes) {
                Ok(()) => {
                    self.in_flight.push_back(lane);
                    match lane {
                        Lane::Control => {
                            self.control.pop_front();
                        }
                        Lane::Bulk => {
                            self.bulk_next = None;
                            self.bulk_in_flight += 1;
                        }
                        Lane::User => {
                            if let Some((_, token)) = self.user.pop_front() {
                                sent.push((token, Ok(())));
                                if self.packing.is_some() {
                                    self.user_multicasts.push(1);
                                }
                            }
                        }
                    }
                }
                Err(TransportError::TryAgain) => {
                    self.blocked = true;
                    return Ok(());
                }
                Err(e @ TransportError::MessageTooLarge { .. }) => match lane {
                    Lane::Control => {
                        tracing::error!("protocol message not sent: {e}");
                        self.control.pop_front();
                    }
                    Lane::Bulk => {
                        tracing::error!("state transfer chunk not sent: {e}; transfer abandoned");
                        self.bulk = None;
                        self.bulk_next = None;
                    }
                    Lane::User => {
                        if let Some((_, token)) = self.user.pop_front() {
                            sent.push((token, Err(e)));
                        }
                    }
                },
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// How many control and user messages from the heads of their lanes
    /// the next batch takes, and its length: control messages first, then
    /// (once every control message is in, and unless a bulk chunk is due
    /// first) user messages, within the caps.
    fn batch_of(&mut self, lane: Lane, packing: Packing) -> (usize, usize, usize) {
        let mut len = HEADER_LEN;
        let mut count = 0;
        let mut fits = |bytes: &[u8]| {
            let grown = len + BATCH_ENTRY_OVERHEAD + bytes.len();
            if count >= packing.max_messages || grown > packing.max_bytes {
                return false;
            }
            len = grown;
            count += 1;
            true
        };
        let controls = self.control.iter().take_while(|(b, _)| fits(b)).count();
        let users_may = match lane {
            Lane::User => true,
            Lane::Control if controls == self.control.len() => {
                !(self.bulk_in_flight < self.bulk_window && self.take_bulk())
            }
            _ => false,
        };
        let users = if users_may {
            self.user.iter().take_while(|(b, _)| fits(b)).count()
        } else {
            0
        };
        (controls, users, len)
    }

    /// Makes sure a chunk is staged in `bulk_next`; false when the bulk
    /// transfer is done (or there is none).
    fn take_bulk(&mut self) -> bool {
        if self.bulk_next.is_some() {
            return true;
        }
        let Some(source) = self.bulk.as_mut() else {
            return false;
        };
        match source() {
            Some(chunk) => {
                self.bulk_next = Some(chunk);
                true
            }
            None => {
                self.bulk = None;
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transport::sim::SimCluster;
    use crate::transport::{GroupName, NodeId, Transport, TransportEvent};

    fn conn(cluster: &SimCluster) -> crate::transport::sim::SimConnection {
        cluster
            .process(NodeId(1))
            .expect("up")
            .join(&GroupName::new("outbox").expect("name"))
            .expect("joined")
    }

    fn delivered(c: &mut crate::transport::sim::SimConnection) -> Vec<Vec<u8>> {
        std::iter::from_fn(|| c.try_next_event().ok().flatten())
            .filter_map(|e| match e {
                TransportEvent::Deliver { bytes, .. } => Some(bytes),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn control_goes_first_and_bulk_interleaves_with_user_messages() {
        let cluster = SimCluster::new(1);
        let mut c = conn(&cluster);
        let mut out: Outbox<u32> = Outbox::new(8, 1);
        for i in 0..3u32 {
            out.push_user(vec![b'u', i as u8], i);
        }
        let mut chunks = (0..3u8).map(|i| vec![b'b', i]);
        out.set_bulk(Box::new(move || chunks.next()));
        out.push_control(b"c".to_vec(), false);
        let mut sent = Vec::new();
        out.flush(&mut c, &mut sent).expect("flush");
        // One chunk in flight at most: the rest of the window goes to users.
        let got = delivered(&mut c);
        assert_eq!(
            got,
            vec![
                b"c".to_vec(),
                b"b\0".to_vec(),
                b"u\0".to_vec(),
                b"u\x01".to_vec(),
                b"u\x02".to_vec()
            ]
        );
        assert_eq!(sent.len(), 3);
        for _ in 0..got.len() {
            out.own_delivered();
        }
        out.flush(&mut c, &mut sent).expect("flush");
        assert_eq!(delivered(&mut c), vec![b"b\x01".to_vec()]);
    }

    #[test]
    fn try_again_keeps_the_message_at_the_head() {
        let cluster = SimCluster::builder(1).max_backlog(1).build();
        let mut c = conn(&cluster);
        let mut out: Outbox<u32> = Outbox::new(8, 2);
        out.push_user(b"1".to_vec(), 1);
        out.push_user(b"2".to_vec(), 2);
        let mut sent = Vec::new();
        out.flush(&mut c, &mut sent)
            .expect("TRY_AGAIN is not an error");
        assert!(out.blocked());
        assert_eq!(sent.len(), 1);
        let got = delivered(&mut c);
        out.own_delivered();
        out.flush(&mut c, &mut sent).expect("flush");
        let mut got2 = delivered(&mut c);
        let mut all = got;
        all.append(&mut got2);
        assert_eq!(all, vec![b"1".to_vec(), b"2".to_vec()]);
    }

    #[test]
    fn purge_drops_unsent_control_and_bulk_but_keeps_sticky_and_user_messages() {
        let cluster = SimCluster::new(1);
        let mut c = conn(&cluster);
        let mut out: Outbox<u32> = Outbox::new(1, 1);
        out.push_control(b"old".to_vec(), false);
        out.push_control(b"older".to_vec(), false);
        out.push_control(b"kept".to_vec(), true);
        out.push_user(b"u".to_vec(), 7);
        out.set_bulk(Box::new(|| Some(b"chunk".to_vec())));
        let mut sent = Vec::new();
        out.flush(&mut c, &mut sent).expect("flush");
        out.purge();
        for _ in 0..2 {
            out.own_delivered();
            out.flush(&mut c, &mut sent).expect("flush");
        }
        let got = delivered(&mut c);
        assert_eq!(got, vec![b"old".to_vec(), b"kept".to_vec(), b"u".to_vec()]);
        assert!(!out.has_queued());
    }

    fn packing(max_messages: usize, max_bytes: usize) -> Option<Packing> {
        Some(Packing {
            codec: Codec::new(1 << 16),
            max_messages,
            max_bytes,
        })
    }

    /// Each multicast as the messages it carried.
    fn unpacked(multicasts: Vec<Vec<u8>>) -> Vec<Vec<Vec<u8>>> {
        let codec = Codec::new(1 << 16);
        multicasts
            .into_iter()
            .map(|m| match codec.decode_frame(&m) {
                Ok(f) if f.kind == crate::wire::Kind::Batch => codec
                    .split_batch(f.body)
                    .expect("batch")
                    .into_iter()
                    .map(<[u8]>::to_vec)
                    .collect(),
                _ => vec![m],
            })
            .collect()
    }

    #[test]
    fn packing_sends_what_is_queued_as_one_batch_in_the_order_of_the_lanes() {
        let cluster = SimCluster::new(1);
        let mut c = conn(&cluster);
        let mut out: Outbox<u32> = Outbox::new(8, 1);
        out.set_packing(packing(16, 1 << 16));
        for i in 0..3u32 {
            out.push_user(vec![b'u', i as u8], i);
        }
        out.push_control(b"c".to_vec(), false);
        let mut sent = Vec::new();
        out.flush(&mut c, &mut sent).expect("flush");
        assert_eq!(
            unpacked(delivered(&mut c)),
            vec![vec![
                b"c".to_vec(),
                b"u\0".to_vec(),
                b"u\x01".to_vec(),
                b"u\x02".to_vec()
            ]]
        );
        assert_eq!(out.in_flight(), 1);
        assert_eq!(sent, vec![(0, Ok(())), (1, Ok(())), (2, Ok(()))]);
        assert_eq!(out.take_user_multicasts(), vec![3]);
    }

    #[test]
    fn a_lone_message_goes_alone_and_unwrapped() {
        let cluster = SimCluster::new(1);
        let mut c = conn(&cluster);
        let mut out: Outbox<u32> = Outbox::new(8, 1);
        out.set_packing(packing(16, 1 << 16));
        out.push_user(b"only".to_vec(), 1);
        let mut sent = Vec::new();
        out.flush(&mut c, &mut sent).expect("flush");
        assert_eq!(delivered(&mut c), vec![b"only".to_vec()]);
        assert_eq!(out.take_user_multicasts(), vec![1]);
    }

    #[test]
    fn packing_keeps_to_its_caps_and_a_due_chunk_goes_alone_between_batches() {
        let cluster = SimCluster::new(1);
        let mut c = conn(&cluster);
        let mut out: Outbox<u32> = Outbox::new(8, 1);
        // Room for two 3-byte messages: header 8, then 4 + 3 each.
        out.set_packing(packing(3, 8 + 2 * 7));
        out.push_control(b"c00".to_vec(), false);
        out.push_control(b"c01".to_vec(), false);
        out.push_control(b"c02".to_vec(), false);
        for i in 0..4u32 {
            out.push_user(vec![b'u', b'0', b'0' + i as u8], i);
        }
        let mut chunks = (0..2u8).map(|i| vec![b'b', i]);
        out.set_bulk(Box::new(move || chunks.next()));
        let mut sent = Vec::new();
        out.flush(&mut c, &mut sent).expect("flush");
        assert_eq!(
            unpacked(delivered(&mut c)),
            vec![
                vec![b"c00".to_vec(), b"c01".to_vec()],
                // The chunk is due before any user message: the control
                // message does not take users along.
                vec![b"c02".to_vec()],
                vec![b"b\0".to_vec()],
                vec![b"u00".to_vec(), b"u01".to_vec()],
                vec![b"u02".to_vec(), b"u03".to_vec()],
            ]
        );
        assert_eq!(out.take_user_multicasts(), vec![2, 2]);
    }

    #[test]
    fn a_batch_the_transport_finds_too_large_goes_one_by_one() {
        let cluster = SimCluster::builder(1).max_message_size(12).build();
        let mut c = conn(&cluster);
        let mut out: Outbox<u32> = Outbox::new(8, 1);
        // The packing believes in more room than the transport has.
        out.set_packing(packing(8, 1 << 10));
        out.push_user(b"one".to_vec(), 1);
        out.push_user(b"two".to_vec(), 2);
        let mut sent = Vec::new();
        out.flush(&mut c, &mut sent).expect("flush");
        assert_eq!(delivered(&mut c), vec![b"one".to_vec(), b"two".to_vec()]);
        assert_eq!(sent, vec![(1, Ok(())), (2, Ok(()))]);
    }

    #[test]
    fn try_again_keeps_a_batch_queued_whole() {
        let cluster = SimCluster::builder(1).max_backlog(1).build();
        let mut c = conn(&cluster);
        let mut out: Outbox<u32> = Outbox::new(8, 1);
        out.set_packing(packing(2, 1 << 10));
        for i in 0..4u32 {
            out.push_user(vec![b'u', i as u8], i);
        }
        let mut sent = Vec::new();
        out.flush(&mut c, &mut sent)
            .expect("TRY_AGAIN is not an error");
        assert!(out.blocked());
        let mut all = unpacked(delivered(&mut c));
        out.own_delivered();
        out.flush(&mut c, &mut sent).expect("flush");
        all.extend(unpacked(delivered(&mut c)));
        assert_eq!(
            all,
            vec![
                vec![b"u\0".to_vec(), b"u\x01".to_vec()],
                vec![b"u\x02".to_vec(), b"u\x03".to_vec()]
            ]
        );
        assert_eq!(sent.len(), 4);
    }

    #[test]
    fn oversized_user_messages_are_reported_not_retried() {
        let cluster = SimCluster::builder(1).max_message_size(4).build();
        let mut c = conn(&cluster);
        let mut out: Outbox<u32> = Outbox::new(4, 1);
        out.push_user(b"too large".to_vec(), 1);
        out.push_user(b"ok".to_vec(), 2);
        let mut sent = Vec::new();
        out.flush(&mut c, &mut sent).expect("flush");
        assert!(matches!(
            sent[0],
            (1, Err(TransportError::MessageTooLarge { .. }))
        ));
        assert_eq!(sent[1], (2, Ok(())));
    }
}
