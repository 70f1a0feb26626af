//! The local side of supervision: building, watching and stopping the
//! actors the supervision engine places on this member.
//!
//! The engine (see [`crate::supervisor`]) decides, identically everywhere,
//! which member runs which incarnation of which child. The runtime of that
//! member calls the child kind's factory with a [`ChildContext`], registers
//! the child under its group-wide name, and watches it: an actor that stops
//! on its own is reported to the group as an ordered `ChildExited` fact, and
//! the engine decides what follows when that fact comes back.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::{Actor, Addr, Handler, Message};

use crate::remote::{Endpoint, Handlers};
use crate::supervisor::{ChildPath, FencingToken, IncarnationId, Shutdown, SlotKey};

/// Asks a supervised actor to stop. Every child actor handles it, usually
/// with `ctx.stop()`. `shutdown` is the child's spec: with a timeout the
/// child may flush first but must stop within it; `BrutalKill` means stop
/// now. actix cannot stop an actor from outside, so stopping is the child's
/// part; once asked, the child no longer receives remote messages, and a
/// child still running after its timeout is reported in the log.
#[derive(Message, Debug, Clone, Copy)]
#[rtype(result = "()")]
pub struct Terminate {
    /// How the spec says the child stops.
    pub shutdown: Shutdown,
}

/// Lets a child tell its supervisor that its coming stop is a normal exit
/// (a transient child is then not restarted). Without it, an actor that
/// stops on its own counts as crashed, as in OTP.
#[derive(Clone, Debug, Default)]
pub struct ExitReporter(Arc<AtomicBool>);

impl ExitReporter {
    /// Marks the next stop as normal.
    pub fn normal(&self) {
        self.0.store(true, Ordering::Relaxed);
    }

    fn is_normal(&self) -> bool {
        self.0.load(Ordering::Relaxed)
    }
}

/// What a child's factory is told about the incarnation it builds.
#[derive(Clone, Debug)]
pub struct ChildContext {
    /// Where the child sits in its tree.
    pub path: ChildPath,
    /// Which instance (for per-node and per-member children).
    pub slot: SlotKey,
    /// This incarnation.
    pub incarnation: IncarnationId,
    /// Its fencing token: only grows from one incarnation of a slot to the
    /// next, group-wide. Hand it to external resources so that a zombie
    /// incarnation (in a cut-off partition) loses against its successor.
    pub token: FencingToken,
    /// The group-wide name the child is registered under.
    pub name: String,
    /// To report a normal exit before stopping.
    pub exit: ExitReporter,
}

/// A started child actor, as its factory returns it.
pub struct Child {
    endpoint: Option<Endpoint>,
    alive: Box<dyn Fn() -> bool>,
    terminate: Box<dyn Fn(Shutdown)>,
}

impl Child {
    /// A child that takes no remote messages.
    pub fn new<A>(addr: Addr<A>) -> Child
    where
        A: Actor<Context = actix::Context<A>> + Handler<Terminate>,
        A::Context: ToEnvelope<A, Terminate>,
    {
        let watch = addr.clone();
        Child {
            endpoint: None,
            alive: Box::new(move || watch.connected()),
            terminate: Box::new(move |shutdown| addr.do_send(Terminate { shutdown })),
        }
    }

    /// A child registered under its name with these handlers, so any member
    /// can reach it with [`crate::Group::remote`].
    pub fn serving<A>(handlers: Handlers<A>) -> Child
    where
        A: Actor<Context = actix::Context<A>> + Handler<Terminate>,
        A::Context: ToEnvelope<A, Terminate>,
    {
        let mut child = Child::new(handlers.addr());
        child.endpoint = Some(handlers.into_endpoint());
        child
    }
}

type Factory = Box<dyn Fn(&ChildContext) -> Child + Send>;

/// The factories of a tree's worker kinds on this member: what to build
/// when the engine places a child of that kind here. Every member that
/// starts the tree supplies them (as every node of an OTP release carries
/// the same code).
#[derive(Default)]
pub struct Factories {
    kinds: HashMap<String, Factory>,
}

impl std::fmt::Debug for Factories {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mut kinds: Vec<&String> = self.kinds.keys().collect();
        kinds.sort();
        f.debug_struct("Factories").field("kinds", &kinds).finish()
    }
}

impl Factories {
    /// No factories yet.
    pub fn new() -> Self {
        Factories::default()
    }

    /// Builds children of worker kind `kind` with `factory`. A restart
    /// calls it again: the actor is built afresh, never repaired.
    pub fn worker(
        mut self,
        kind: impl Into<String>,
        factory: impl Fn(&ChildContext) -> Child + Send + 'static,
    ) -> Self {
        self.kinds.insert(kind.into(), Box::new(factory));
        self
    }

    pub(crate) fn build(&self, kind: &str, ctx: &ChildContext) -> Option<Child> {
        self.kinds.get(kind).map(|f| f(ctx))
    }
}

/// The group-wide name of a child instance, as
/// [`ChildStatus::name`](crate::supervisor::ChildStatus::name) documents
/// it: `tree/id` for a single instance, `tree/id@node2` for a per-node
/// one, `tree/id@node2/4242` for a per-member one.
pub fn child_name(path: &ChildPath, slot: &SlotKey) -> String {
    crate::supervisor::registry_name(path, slot)
}

/// A child running on this member.
pub(crate) struct LocalChild {
    pub(crate) incarnation: IncarnationId,
    pub(crate) name: String,
    pub(crate) exit: ExitReporter,
    child: Child,
}

impl LocalChild {
    pub(crate) fn new(ctx: &ChildContext, child: Child) -> (LocalChild, Option<Endpoint>) {
        let mut child = child;
        let endpoint = child.endpoint.take();
        (
            LocalChild {
                incarnation: ctx.incarnation,
                name: ctx.name.clone(),
                exit: ctx.exit.clone(),
                child,
            },
            endpoint,
        )
    }

    pub(crate) fn alive(&self) -> bool {
        (self.child.alive)()
    }

    pub(crate) fn exited_normally(&self) -> bool {
        self.exit.is_normal()
    }

    pub(crate) fn terminate(&self, shutdown: Shutdown) {
        (self.child.terminate)(shutdown);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    struct Recorder(Arc<Mutex<Vec<Shutdown>>>);

    impl Actor for Recorder {
        type Context = actix::Context<Self>;
    }

    impl Handler<Terminate> for Recorder {
        type Result = ();
        fn handle(&mut self, t: Terminate, ctx: &mut actix::Context<Self>) {
            self.0.lock().unwrap().push(t.shutdown);
            actix::ActorContext::stop(ctx);
        }
    }

    #[actix_rt::test]
    async fn a_child_is_told_how_its_spec_says_to_stop_and_its_stop_is_seen() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let ctx = ChildContext {
            path: ChildPath::new("t", ["w"]),
            slot: SlotKey::Single,
            incarnation: IncarnationId(3),
            token: FencingToken { epoch: 1, seq: 2 },
            name: "t/w".into(),
            exit: ExitReporter::default(),
        };
        let child = Child::new(Recorder(seen.clone()).start());
        let (local, endpoint) = LocalChild::new(&ctx, child);
        assert!(endpoint.is_none());
        assert!(local.alive());
        local.terminate(Shutdown::Timeout { ms: 7 });
        for _ in 0..100 {
            if !local.alive() {
                break;
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(!local.alive(), "the child stopped");
        assert!(!local.exited_normally(), "no normal exit was reported");
        assert_eq!(*seen.lock().unwrap(), vec![Shutdown::Timeout { ms: 7 }]);
    }
}
