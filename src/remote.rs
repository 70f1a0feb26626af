//! Typed messages to named actors anywhere in the group.
//!
//! A [`RemoteMessage`] is an ordinary actix [`Message`] that serde can carry
//! and that has a stable type tag. A host registers a local actor with the
//! [`Handlers`] it accepts; any member sends through a [`RemoteAddr`](crate::RemoteAddr). The
//! request is multicast (CPG has no unicast), reaches its place in the total
//! order, and the member that holds the name at that point hands it to the
//! local actor; the reply travels back through the group.
//!
//! # Evolving a message
//!
//! The payload is bincode, which is not self-describing: a member reads a
//! message by the shape its own build has for the type tag, and refuses
//! bytes that do not fit that shape exactly (trailing bytes included). So
//! a shape never changes under a tag in use: add a field to a message
//! tagged `"app.Add.v1"` and every member still on the old build fails it.
//! A new shape gets a new type with a new tag instead:
//!
//! 1. Add the new type beside the old one (`AddV2`, tagged
//!    `"app.Add.v2"`); the old type and its tag stay as they are. The
//!    result type is part of the shape too: a new result needs a new tag.
//! 2. Upgrade the members one at a time. An upgraded host accepts both
//!    (`Handlers::new(addr).with::<AddV1>().with::<AddV2>()`), usually
//!    handling v1 as the v2 it means.
//! 3. Callers keep sending v1 while any member runs the old build: any
//!    member may host a name (a supervised child moves when its host
//!    leaves). Once every member is upgraded, callers switch to v2.
//! 4. A later release, once nobody sends v1, drops its handler.
//!
//! A mismatch reaches the caller of [`RemoteAddr::send`](crate::RemoteAddr::send)
//! as an error, never a hang:
//!
//! - a tag the host does not accept under that name (v2 sent to an old
//!   build): [`CallError::Remote`](crate::CallError::Remote)`(`[`RemoteFailure::UnknownType`]`)`;
//! - a payload that does not decode as the tagged type (a shape changed
//!   under the old tag): [`CallError::Remote`](crate::CallError::Remote)`(`[`RemoteFailure::BadPayload`]`)`;
//! - a reply that does not decode as the caller's result type:
//!   [`CallError::Codec`](crate::CallError::Codec).
//!
//! In the first two cases the actor handled nothing, so a caller may also
//! try v2 and fall back to v1 on `UnknownType`. A `tell` or `try_tell` gets
//! no answer: it succeeds once multicast, and the host drops a message it
//! cannot take, logs it and counts it: an unknown tag in
//! [`MetricsSnapshot::dropped_unknown_type`](crate::MetricsSnapshot::dropped_unknown_type),
//! a payload that does not decode in
//! [`MetricsSnapshot::dropped_bad_payload`](crate::MetricsSnapshot::dropped_bad_payload).
//! During a rollout, use `send` where a mismatch must be seen.
//!
//! ```
//! use actix::prelude::*;
//! use actix_cpg::transport::sim::SimCluster;
//! use actix_cpg::{
//!     CallError, Group, GroupConfig, GroupName, Handlers, NodeId, RemoteFailure, RemoteMessage,
//!     Transport,
//! };
//! use serde::{Deserialize, Serialize};
//!
//! /// The first shape: every build takes it.
//! #[derive(Message, Serialize, Deserialize)]
//! #[rtype(result = "u64")]
//! struct AddV1(u64);
//!
//! impl RemoteMessage for AddV1 {
//!     const TYPE_TAG: &'static str = "app.Add.v1";
//! }
//!
//! /// A field more: a new shape, so a tag of its own.
//! #[derive(Message, Serialize, Deserialize)]
//! #[rtype(result = "u64")]
//! struct AddV2 {
//!     n: u64,
//!     times: u64,
//! }
//!
//! impl RemoteMessage for AddV2 {
//!     const TYPE_TAG: &'static str = "app.Add.v2";
//! }
//!
//! /// The old build's counter: v1 only.
//! #[derive(Default)]
//! struct OldCounter(u64);
//!
//! impl Actor for OldCounter {
//!     type Context = Context<Self>;
//! }
//!
//! impl Handler<AddV1> for OldCounter {
//!     type Result = u64;
//!     fn handle(&mut self, AddV1(n): AddV1, _: &mut Context<Self>) -> u64 {
//!         self.0 += n;
//!         self.0
//!     }
//! }
//!
//! /// The upgraded build's counter: v2, and v1 as the v2 it means.
//! #[derive(Default)]
//! struct Counter(u64);
//!
//! impl Actor for Counter {
//!     type Context = Context<Self>;
//! }
//!
//! impl Handler<AddV2> for Counter {
//!     type Result = u64;
//!     fn handle(&mut self, AddV2 { n, times }: AddV2, _: &mut Context<Self>) -> u64 {
//!         self.0 += n * times;
//!         self.0
//!     }
//! }
//!
//! impl Handler<AddV1> for Counter {
//!     type Result = u64;
//!     fn handle(&mut self, AddV1(n): AddV1, _: &mut Context<Self>) -> u64 {
//!         self.0 += n;
//!         self.0
//!     }
//! }
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! actix::System::new().block_on(async {
//!     let cluster = SimCluster::new(2);
//!     let name = GroupName::new("app")?;
//!     let old = Group::start(cluster.process(NodeId(1))?.join(&name)?, GroupConfig::default()).await?;
//!     let new = Group::start(cluster.process(NodeId(2))?.join(&name)?, GroupConfig::default()).await?;
//!     old.register("old-counter", Handlers::new(OldCounter::default().start()).with::<AddV1>())
//!         .await?;
//!     new.register(
//!         "counter",
//!         Handlers::new(Counter::default().start()).with::<AddV1>().with::<AddV2>(),
//!     )
//!     .await?;
//!
//!     // While an old build may host a name, callers send v1: every build takes it.
//!     assert_eq!(old.remote::<AddV1>("counter").send(AddV1(2)).await?, 2);
//!     assert_eq!(new.remote::<AddV1>("old-counter").send(AddV1(2)).await?, 2);
//!
//!     // v2 at an old build is refused, handled by nobody: fall back to v1.
//!     let refused = new.remote::<AddV2>("old-counter").send(AddV2 { n: 1, times: 3 }).await;
//!     assert_eq!(
//!         refused,
//!         Err(CallError::Remote(RemoteFailure::UnknownType("app.Add.v2".into())))
//!     );
//!
//!     // An upgraded host takes both.
//!     assert_eq!(new.remote::<AddV2>("counter").send(AddV2 { n: 1, times: 3 }).await?, 5);
//!     Ok(())
//! })
//! # }
//! ```

use std::collections::HashMap;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};
use futures::future::LocalBoxFuture;
use futures::FutureExt;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};

use crate::wire::Codec;

/// An actix message that can cross the group.
///
/// `TYPE_TAG` names the type on the wire: keep it stable across versions
/// (for example `"myapp.Deposit.v1"`), independent of the Rust path, and
/// give a changed shape a new tag ([evolving a message](crate::remote#evolving-a-message)).
/// With the cargo feature `derive`, `#[derive(RemoteMessage)]` and
/// `#[remote(tag = "myapp.Deposit.v1")]` write the impl below.
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

/// Why a host could not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteFailure {
    /// The host does not accept this message type (the tag given) under
    /// that name: an older or other build. Nothing was handled.
    UnknownType(String),
    /// The payload did not decode as the type its tag names on the host
    /// (the sender's shape for the tag differs; why, in words). Nothing
    /// was handled.
    BadPayload(String),
    /// The local actor is gone (stopped) or its mailbox is closed.
    ActorGone,
    /// The result could not be encoded.
    Encode(String),
}

/// The reply to come, if the sender wants one.
pub(crate) type PendingReply = Option<LocalBoxFuture<'static, Result<Vec<u8>, RemoteFailure>>>;

type HandlerFn = Box<dyn Fn(&Codec, &[u8], bool) -> Result<PendingReply, RemoteFailure> + Send>;

/// A local actor and the remote message types it accepts, ready to be
/// registered under a name with [`Group::register`](crate::Group::register).
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
