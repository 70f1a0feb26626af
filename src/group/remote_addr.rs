//! [`RemoteAddr`]: the sending side of remote messages, a typed address of
//! a named actor somewhere in the group (the receiving side,
//! [`crate::remote::Handlers`], is in [`crate::remote`]).

use std::future::Future;
use std::marker::PhantomData;
use std::time::Duration;

use crate::group::{CallError, Group, RequestHead};
use crate::remote::RemoteMessage;
use crate::spans::RequestKey;
use crate::supervisor::FencingToken;
use serde::de::DeserializeOwned;
use serde::Serialize;
use tracing::Instrument;

use crate::wire::Kind;

/// A typed address of a named actor somewhere in the group.
pub struct RemoteAddr<M> {
    group: Group,
    name: String,
    fence: Option<FencingToken>,
    timeout: Option<Duration>,
    _message: PhantomData<fn() -> M>,
}

impl<M> Clone for RemoteAddr<M> {
    fn clone(&self) -> Self {
        RemoteAddr {
            group: self.group.clone(),
            name: self.name.clone(),
            fence: self.fence,
            timeout: self.timeout,
            _message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for RemoteAddr<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAddr")
            .field("name", &self.name)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl<M> RemoteAddr<M> {
    pub(crate) fn new(group: Group, name: String) -> Self {
        RemoteAddr {
            timeout: group.call_timeout(),
            group,
            name,
            fence: None,
            _message: PhantomData,
        }
    }

    /// The registered name this address points at.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Only for the incarnation of the supervised child with this fencing
    /// token (from [`crate::supervisor::SlotStatus::Running`] or a
    /// `ChildStarted`/`ChildRestarted` event). If, where the request lands in
    /// the total order, the child runs another incarnation (or none), every
    /// member refuses it alike: the caller gets
    /// [`CallError::StaleIncarnation`] and nothing is delivered.
    pub fn fenced(mut self, token: FencingToken) -> Self {
        self.fence = Some(token);
        self
    }

    /// Bounds every [`RemoteAddr::send`] through this address: without an
    /// outcome `limit` after the call, it fails with
    /// [`CallError::Timeout`]. This member then forgets the call and
    /// ignores a late reply; the request itself may still be handled.
    /// Replaces `GroupConfig::call_timeout` for this address. `tell` and
    /// `try_tell` are not bounded: they end once the message is multicast.
    pub fn timeout(mut self, limit: Duration) -> Self {
        self.timeout = Some(limit);
        self
    }
}

impl<M> RemoteAddr<M>
where
    M: RemoteMessage,
    M::Result: Serialize + DeserializeOwned + Send + 'static,
{
    /// Sends `msg` and awaits the actor's reply. The request takes its place
    /// among this process's messages when this is called (not when the
    /// future is first polled), so requests made one after the other enter
    /// the total order in that order. If the send queue is full the future
    /// waits for room, keeping that place; dropping it before then gives the
    /// place up and sends nothing.
    ///
    /// Fails with [`CallError::NoSuchName`] if nobody holds the name when
    /// the request reaches its place in the order, with
    /// [`CallError::HostLeft`] if the host leaves before replying, with
    /// [`CallError::Remote`] if the host cannot handle it (a type tag it
    /// does not accept under that name, a payload that does not decode as
    /// the tagged type: see [`crate::remote`] on evolving a message), and
    /// with [`CallError::Timeout`] past the address's time limit
    /// ([`RemoteAddr::timeout`]), if it has one. Dropping the future gives
    /// the call up: a reply that comes after is ignored.
    pub fn send(&self, msg: M) -> impl Future<Output = Result<M::Result, CallError>> + 'static {
        self.send_within(msg, self.timeout)
    }

    /// [`RemoteAddr::send`], failing with [`CallError::Timeout`] if no
    /// outcome comes within `limit` of this call (instead of the
    /// address's own limit, if any).
    pub fn send_timeout(
        &self,
        msg: M,
        limit: Duration,
    ) -> impl Future<Output = Result<M::Result, CallError>> + 'static {
        self.send_within(msg, Some(limit))
    }

    fn send_within(
        &self,
        msg: M,
        limit: Option<Duration>,
    ) -> impl Future<Output = Result<M::Result, CallError>> + 'static {
        // Counted from the call, like the request's place in the order; a
        // limit too far off to be an instant is no limit.
        let deadline = limit.and_then(|limit| {
            tokio::time::Instant::now()
                .checked_add(limit)
                .map(|at| (at, limit))
        });
        let codec = self.group.codec();
        let timer = self.group.call_timer();
        let mut span = tracing::Span::none();
        let call = self.encode(&msg, true).map(|(id, bytes)| {
            span = self.span(id);
            self.group.call(id, bytes, true)
        });
        let called = async move {
            let call = call?;
            let outcome = match deadline {
                // Dropping the call on expiry has the runtime forget it.
                Some((at, limit)) => tokio::time::timeout_at(at, call)
                    .await
                    .map_err(|_| CallError::Timeout(limit))?,
                None => call.await,
            };
            let reply = outcome?.ok_or(CallError::Closed)?;
            codec.decode_payload(&reply).map_err(CallError::Codec)
        };
        let timed = async move {
            let outcome = called.await;
            timer.done(outcome.is_ok());
            outcome
        };
        outcome_logged(timed).instrument(span)
    }

    /// Sends `msg` without awaiting a reply. Takes its place in the order
    /// when called, like [`RemoteAddr::send`]; resolves once the message is
    /// multicast (a message in pieces: once it is back whole, see
    /// `GroupConfig::chunk_size`), so a producer that awaits it (or keeps a
    /// bounded number of these in flight) is held back by the send window
    /// and queue.
    pub fn tell(&self, msg: M) -> impl Future<Output = Result<(), CallError>> + 'static {
        let mut span = tracing::Span::none();
        let call = self.encode(&msg, false).map(|(id, bytes)| {
            span = self.span(id);
            self.group.call(id, bytes, false)
        });
        outcome_logged(async move { call?.await.map(|_| ()) }).instrument(span)
    }

    /// The caller's span of the call `id` ([`crate::spans`]).
    fn span(&self, id: u64) -> tracing::Span {
        crate::spans::call(
            self.group.name(),
            RequestKey {
                caller: self.group.local(),
                id,
            },
            &self.name,
            M::TYPE_TAG,
        )
    }

    /// Queues `msg` for the actor now, or fails with
    /// [`CallError::WouldBlock`] (nothing queued; `msg` is still the
    /// caller's) when the send queue is full or others wait for it. A
    /// producer that meets `WouldBlock` awaits [`Group::ready_to_send`] and
    /// tries again, so memory stays bounded however fast it is.
    ///
    /// [`Group::ready_to_send`]: crate::Group::ready_to_send
    pub fn try_tell(&self, msg: &M) -> Result<(), CallError> {
        let (id, bytes) = self.encode(msg, false)?;
        let _admit = crate::stages::time(crate::stages::Stage::Admit);
        self.group.try_forget(id, bytes)
    }

    /// The request envelope, with the message serialized straight into it.
    fn encode(&self, msg: &M, want_reply: bool) -> Result<(u64, Vec<u8>), CallError> {
        let _encode = crate::stages::time(crate::stages::Stage::Encode);
        let id = self.group.next_request_id();
        let head = RequestHead {
            id,
            target: &self.name,
            type_tag: M::TYPE_TAG,
            want_reply,
            fence: self.fence,
        };
        let bytes = self
            .group
            .codec()
            .encode_with_written_head_in(
                Kind::Request,
                head.encoded_len(),
                |out| head.write(out),
                msg,
                |len| self.group.envelope_buffer(len),
            )
            .map_err(CallError::Codec)?;
        Ok((id, bytes))
    }
}

/// `call`, logging its outcome at debug (inside the call's span).
async fn outcome_logged<T>(
    call: impl Future<Output = Result<T, CallError>>,
) -> Result<T, CallError> {
    let outcome = call.await;
    match &outcome {
        Ok(_) => tracing::debug!("call done"),
        Err(e) => tracing::debug!(error = %e, "call failed"),
    }
    outcome
}
