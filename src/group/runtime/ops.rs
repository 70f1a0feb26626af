//! The requests a [`crate::group::Group`] handle sends its runtime, and how
//! the runtime takes them: local answers at once, messages for the group
//! into the send queue.

use super::{Done, GroupActor, OnSent};
use crate::group::children::Factories;
use crate::group::inspect::{inspect, GroupInspection};
use crate::group::messages::{RegistryOp, SupervisionMsg};
use crate::group::{CallError, CallOutcome, GroupError};
use crate::remote::Endpoint;
use crate::supervisor::{ChildStatus, TreeSpec};
use crate::transport::Member;
use crate::wire::Kind;

/// A request from a [`super::Group`] handle.
pub(crate) enum Op {
    Register {
        name: String,
        endpoint: Endpoint,
        done: Done<Result<(), GroupError>>,
    },
    Unregister {
        name: String,
        done: Done<Result<(), GroupError>>,
    },
    Lookup {
        name: String,
        done: Done<Option<Member>>,
    },
    Names {
        done: Done<Vec<(String, Member)>>,
    },
    Members {
        done: Done<Vec<Member>>,
    },
    /// A request envelope built by the caller, admitted by the gate (its
    /// bytes are released there once multicast).
    Call {
        id: u64,
        bytes: Vec<u8>,
        want_reply: bool,
        /// `None` for a fire-and-forget `try_tell`: nobody awaits it.
        done: Option<Done<CallOutcome>>,
    },
    /// The caller of call `id` gave up on it (a timeout, or it dropped the
    /// call's future): forget it, and ignore its reply.
    Forget {
        id: u64,
    },
    /// Multicast everything queued so far without waiting for the linger.
    Flush {
        done: Done<()>,
    },
    Leave {
        done: Done<Result<(), GroupError>>,
    },
    StartTree {
        name: String,
        spec: TreeSpec,
        factories: Factories,
        done: Done<Result<(), GroupError>>,
    },
    Children {
        done: Done<Vec<ChildStatus>>,
    },
    Inspect {
        done: Done<GroupInspection>,
    },
}

impl GroupActor {
    pub(super) fn take_op(&mut self, op: Op) {
        if self.leaving.is_some() {
            if let Op::Call { bytes, .. } = &op {
                self.gate.release(bytes.len());
            }
            reject_closed(op);
            return;
        }
        match op {
            Op::Register {
                name,
                endpoint,
                done,
            } => {
                if self.endpoints.contains_key(&name) {
                    let _ = done.send(Err(GroupError::NameTaken {
                        name,
                        owner: self.local(),
                    }));
                    return;
                }
                let token = self.next_id();
                self.endpoints.insert(name.clone(), endpoint);
                self.registering.insert(token, (name.clone(), Some(done)));
                self.enqueue(
                    Kind::Registry,
                    &RegistryOp::Register { name, token },
                    OnSent::Registering(token),
                );
            }
            Op::Unregister { name, done } => {
                if self.endpoints.remove(&name).is_some() {
                    self.enqueue(
                        Kind::Registry,
                        &RegistryOp::Unregister { name },
                        OnSent::Resolve(done),
                    );
                } else {
                    let _ = done.send(Ok(()));
                }
            }
            Op::Lookup { name, done } => {
                let _ = done.send(self.core.lookup(&name));
            }
            Op::Names { done } => {
                let _ = done.send(
                    self.core
                        .names()
                        .iter()
                        .map(|(n, h)| (n.clone(), *h))
                        .collect(),
                );
            }
            Op::Members { done } => {
                let _ = done.send(self.core.view().to_vec());
            }
            Op::Call {
                id,
                bytes,
                want_reply,
                done,
            } => {
                let on_sent = match (want_reply, done) {
                    (true, Some(done)) => {
                        self.calls.insert(id, done);
                        OnSent::Awaiting(id)
                    }
                    (false, Some(done)) => OnSent::Told(done),
                    (_, None) => OnSent::Nothing,
                };
                self.push_back(bytes, on_sent, true);
            }
            Op::Forget { id } => {
                // Unknown when the call already ended: nothing to forget.
                if self.calls.remove(&id).is_some() {
                    self.core.abandon_call(id);
                    self.metrics.call_abandoned();
                }
            }
            Op::Flush { done } => match self.queue.flush_all() {
                None => {
                    let _ = done.send(());
                }
                Some(upto) => self.flush_marks.push_back((upto, done)),
            },
            Op::Leave { done } => {
                self.leaving = Some(done);
            }
            Op::StartTree {
                name,
                spec,
                factories,
                done,
            } => {
                let fingerprint = spec.fingerprint();
                let kinds = spec
                    .worker_kinds()
                    .into_iter()
                    .filter(|k| factories.has(k))
                    .collect();
                self.sup.trees.insert(name.clone(), factories);
                if let Some((_, earlier)) =
                    self.sup.starting.insert(name.clone(), (fingerprint, done))
                {
                    let _ = earlier.send(Err(GroupError::Closed));
                }
                self.enqueue(
                    Kind::Supervision,
                    &SupervisionMsg::TreeStarted {
                        name,
                        fingerprint,
                        spec,
                        kinds,
                    },
                    OnSent::Nothing,
                );
                // Children the engine already placed here may now be built.
                self.reconcile();
            }
            Op::Children { done } => {
                let _ = done.send(self.core.engine().children());
            }
            Op::Inspect { done } => {
                let _ = done.send(inspect(
                    &self.core,
                    self.conn.group(),
                    self.metrics.snapshot(),
                ));
            }
        }
    }
}

pub(super) fn reject_closed(op: Op) {
    match op {
        Op::Register { done, .. } | Op::Unregister { done, .. } | Op::Leave { done } => {
            let _ = done.send(Err(GroupError::Closed));
        }
        Op::Call { done, .. } => {
            if let Some(done) = done {
                let _ = done.send(Err(CallError::Closed));
            }
        }
        Op::StartTree { done, .. } => {
            let _ = done.send(Err(GroupError::Closed));
        }
        Op::Lookup { .. }
        | Op::Forget { .. }
        | Op::Names { .. }
        | Op::Members { .. }
        | Op::Children { .. }
        | Op::Inspect { .. }
        | Op::Flush { .. } => {}
    }
}
