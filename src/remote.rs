//! Typed messages to named actors anywhere in the group.
//!
//! A [`RemoteMessage`] is an ordinary actix [`Message`] that serde can carry
//! and that has a stable type tag. A host registers a local actor with the
//! [`Handlers`] it accepts; any member sends through a [`RemoteAddr`]. The
//! request is multicast (CPG has no unicast), reaches its place in the total
//! order, and the member that holds the name at that point hands it to the
//! local actor; the reply travels back through the group.

use std::collections::HashMap;
use std::future::Future;
use std::marker::PhantomData;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::group::{CallError, Group, RemoteFailure, RequestHead};
use crate::supervisor::FencingToken;
use crate::wire::{Codec, Kind};

/// An actix message that can cross the group.
///
/// `TYPE_TAG` names the type on the wire: keep it stable across versions
/// (for example `"myapp.Deposit.v1"`), independent of the Rust path.
///
/// ```
/// use actix::Message;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Message, Serialize, Deserialize)]
/// #[rtype(result = "u64")]
/// struct Add(u64);
///
/// impl actix_cpg::RemoteMessage for Add {
///     const TYPE_TAG: &'static str = "example.Add";
/// }
/// ```
pub trait RemoteMessage: Message + Serialize + DeserializeOwned + Send + 'static {
    /// The stable wire name of this message type.
    const TYPE_TAG: &'static str;
}

/// The reply to come, if the sender wants one.
pub(crate) type PendingReply = Option<LocalBoxFuture<'static, Result<Vec<u8>, RemoteFailure>>>;

type HandlerFn = Box<dyn Fn(&Codec, &[u8], bool) -> Result<PendingReply, RemoteFailure> + Send>;

/// A local actor and the remote message types it accepts, ready to be
/// registered under a name with [`Group::register`].
pub struct Handlers<A: Actor> {
    addr: Addr<A>,
    table: HashMap<&'static str, HandlerFn>,
}

impl<A> Handlers<A>
where
    A: Actor<Context = actix::Context<A>>,
{
    /// Handlers for `addr`, accepting nothing yet.
    pub fn new(addr: Addr<A>) -> Self {
        Handlers {
            addr,
            table: HashMap::new(),
        }
    }

    /// Also accept messages of type `M`.
    pub fn with<M>(mut self) -> Self
    where
        M: RemoteMessage,
        M::Result: Serialize + DeserializeOwned + Send + 'static,
        A: Handler<M>,
        A::Context: ToEnvelope<A, M>,
    {
        let addr = self.addr.clone();
        let handler: HandlerFn = Box::new(move |codec: &Codec, payload: &[u8], want_reply| {
            let msg: M = codec
                .decode_payload(payload)
                .map_err(|e| RemoteFailure::BadPayload(e.to_string()))?;
            if !want_reply {
                // Queued in the mailbox now, whatever its fill, so tells
                // reach the actor in the group's total order, with no
                // future per message. (The group cannot slow delivery down
                // for a slow actor: CPG must be dispatched.)
                addr.do_send(msg);
                return Ok(None);
            }
            // `send` queues the message now unless the mailbox is over its
            // capacity, when actix keeps it in the request until polled;
            // only the reply is awaited.
            let request = addr.send(msg);
            let codec = *codec;
            Ok(Some(
                async move {
                    let result = request.await.map_err(|_| RemoteFailure::ActorGone)?;
                    codec
                        .encode_payload(&result)
                        .map_err(|e| RemoteFailure::Encode(e.to_string()))
                }
                .boxed_local(),
            ))
        });
        self.table.insert(M::TYPE_TAG, handler);
        self
    }

    pub(crate) fn addr(&self) -> Addr<A> {
        self.addr.clone()
    }

    pub(crate) fn into_endpoint(self) -> Endpoint {
        Endpoint {
            table: self.table.into_iter().collect(),
        }
    }
}

/// A registered name's type-erased handlers, in a list: an actor takes a
/// handful of types, and comparing a few short tags costs less than hashing
/// one.
pub(crate) struct Endpoint {
    table: Vec<(&'static str, HandlerFn)>,
}

impl Endpoint {
    /// Decodes and queues a request for the local actor; the future (if a
    /// reply is wanted) yields the encoded reply.
    pub(crate) fn dispatch(
        &self,
        codec: &Codec,
        type_tag: &[u8],
        payload: &[u8],
        want_reply: bool,
    ) -> Result<PendingReply, RemoteFailure> {
        match self
            .table
            .iter()
            .find(|(tag, _)| tag.as_bytes() == type_tag)
        {
            Some((_, handler)) => handler(codec, payload, want_reply),
            None => Err(RemoteFailure::UnknownType(
                String::from_utf8_lossy(type_tag).into_owned(),
            )),
        }
    }
}

/// A typed address of a named actor somewhere in the group.
pub struct RemoteAddr<M> {
    group: Group,
    name: String,
    fence: Option<FencingToken>,
    _message: PhantomData<fn() -> M>,
}

impl<M> Clone for RemoteAddr<M> {
    fn clone(&self) -> Self {
        RemoteAddr {
            group: self.group.clone(),
            name: self.name.clone(),
            fence: self.fence,
            _message: PhantomData,
        }
    }
}

impl<M> std::fmt::Debug for RemoteAddr<M> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RemoteAddr")
            .field("name", &self.name)
            .finish()
    }
}

impl<M> RemoteAddr<M> {
    pub(crate) fn new(group: Group, name: String) -> Self {
        RemoteAddr {
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
    /// the request reaches its place in the order, and with
    /// [`CallError::HostLeft`] if the host leaves before replying.
    pub fn send(&self, msg: M) -> impl Future<Output = Result<M::Result, CallError>> + 'static {
        let codec = self.group.codec();
        let call = self
            .encode(&msg, true)
            .map(|(id, bytes)| self.group.call(id, bytes, true));
        async move {
            let reply = call?.await?.ok_or(CallError::Closed)?;
            codec
                .decode_payload(&reply)
                .map_err(|e| CallError::Codec(e.to_string()))
        }
    }

    /// Sends `msg` without awaiting a reply. Takes its place in the order
    /// when called, like [`RemoteAddr::send`]; resolves once the message is
    /// multicast (a message in pieces: once it is back whole, see
    /// `GroupConfig::chunk_size`), so a producer that awaits it (or keeps a
    /// bounded number of these in flight) is held back by the send window
    /// and queue.
    pub fn tell(&self, msg: M) -> impl Future<Output = Result<(), CallError>> + 'static {
        let call = self
            .encode(&msg, false)
            .map(|(id, bytes)| self.group.call(id, bytes, false));
        async move { call?.await.map(|_| ()) }
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
        self.group.try_forget(id, bytes)
    }

    /// The request envelope, with the message serialized straight into it.
    fn encode(&self, msg: &M, want_reply: bool) -> Result<(u64, Vec<u8>), CallError> {
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
            .encode_with_written_head(
                Kind::Request,
                head.encoded_len(),
                |out| head.write(out),
                msg,
            )
            .map_err(|e| CallError::Codec(e.to_string()))?;
        Ok((id, bytes))
    }
}
