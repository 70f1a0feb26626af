//! Typed messages to named actors anywhere in the group.
//!
//! A [`RemoteMessage`] is an ordinary actix [`Message`] that serde can carry
//! and that has a stable type tag. A host registers a local actor with the
//! [`Handlers`] it accepts; any member sends through a [`RemoteAddr`](crate::RemoteAddr). The
//! request is multicast (CPG has no unicast), reaches its place in the total
//! order, and the member that holds the name at that point hands it to the
//! local actor; the reply travels back through the group.

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
/// (for example `"myapp.Deposit.v1"`), independent of the Rust path. With
/// the cargo feature `derive`, `#[derive(RemoteMessage)]` and
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

/// The reply to come, if the sender wants one.
/// Why a host could not produce a reply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum RemoteFailure {
    /// The host does not accept this message type under that name.
    UnknownType(String),
    /// The payload did not decode as the named type.
    BadPayload(String),
    /// The local actor is gone (stopped) or its mailbox is closed.
    ActorGone,
    /// The result could not be encoded.
    Encode(String),
}

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
