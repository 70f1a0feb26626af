//! The local side of supervision: building, watching and stopping the
//! actors the supervision engine places on this member.
//!
//! The engine (see [`crate::supervisor`]) decides, identically everywhere,
//! which member runs which incarnation of which child. The runtime of that
//! member calls the child kind's factory with a [`ChildContext`], registers
//! the child under its group-wide name, and watches it: an actor that stops
//! on its own is reported to the group as an ordered `ChildExited` fact, and
//! the engine decides what follows when that fact comes back.

use std::cell::Cell;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use actix::dev::ToEnvelope;
use actix::fut::wrap_future;
use actix::{Actor, ActorContext, ActorFutureExt, Addr, AsyncContext, Handler, Message};
use tokio::sync::oneshot;

use crate::remote::{Endpoint, Handlers};
use crate::supervisor::{ChildName, ChildPath, FencingToken, IncarnationId, Shutdown, SlotKey};

/// Asks a supervised actor to stop. A child made with [`Child::new`] or
/// [`Child::serving`] handles it, usually with `ctx.stop()`; one started
/// with [`Child::start`] or [`Child::start_serving`] needs no handler (the
/// library stops it at once). `shutdown` is the child's spec: with a
/// timeout the child may flush first but must stop within it; `BrutalKill`
/// means stop now. actix cannot stop an actor from outside, so stopping is
/// the child's part; once asked, the child no longer receives remote
/// messages, and a child still running after its timeout is reported in the
/// log.
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
///
/// Two ways to make one:
///
/// - [`Child::start`] / [`Child::start_serving`] take the actor itself and
///   start it, as `actix::Supervisor::start` does: the library stops it when
///   the engine says so, and the actor needs no [`Terminate`] handler;
/// - [`Child::new`] / [`Child::serving`] take an actor already started
///   (in another arbiter, say) that handles [`Terminate`] itself, to flush
///   within its shutdown timeout.
pub struct Child {
    endpoint: Option<Endpoint>,
    alive: Box<dyn Fn() -> bool>,
    terminate: Box<dyn Fn(Shutdown)>,
}

impl Child {
    /// Starts `actor` in the current arbiter as a child that takes no remote
    /// messages, and stops it (`ctx.stop()`) when the engine stops it: the
    /// actor writes no [`Terminate`] handler.
    ///
    /// ```
    /// use actix::prelude::*;
    /// use actix_cpg::{Child, ChildContext, Factories};
    ///
    /// struct Worker;
    /// impl Actor for Worker {
    ///     type Context = Context<Self>;
    /// }
    ///
    /// let factories = Factories::new().worker("worker", |_: &ChildContext| Child::start(Worker));
    /// ```
    ///
    /// Why the library starts the actor: actix can only stop an actor from
    /// inside its own context, and the only way in from an `Addr` is a
    /// message the actor handles — so taking an `Addr` means every child
    /// writes the same `Handler<Terminate>`, and a blanket impl of actix's
    /// `Handler` for every actor is not allowed to a library (the orphan
    /// rule). Starting the actor itself, as `actix::Supervisor::start` and
    /// `Actor::create` do, lets the library place the stop in the child's
    /// context before it runs; a macro writing the handler would still be a
    /// line per actor. The stop comes at once, whatever the spec's
    /// [`Shutdown`]: messages still in the mailbox may go unhandled, and
    /// `Actor::stopping`/`stopped` run as for any stop. An actor that must
    /// finish its work within the shutdown timeout handles [`Terminate`]
    /// itself and uses [`Child::new`].
    pub fn start<A>(actor: A) -> Child
    where
        A: Actor<Context = actix::Context<A>>,
    {
        let (addr, terminate) = start_stoppable(actor);
        Child {
            endpoint: None,
            alive: Box::new(move || addr.connected()),
            terminate,
        }
    }

    /// Starts `actor` as [`Child::start`] does, registered under its name
    /// with the handlers `accepts` adds, so any member can reach it with
    /// [`crate::Group::remote`]; no [`Terminate`] handler needed.
    ///
    /// ```
    /// use actix::prelude::*;
    /// use actix_cpg::{Child, ChildContext, Factories, RemoteMessage};
    /// use serde::{Deserialize, Serialize};
    ///
    /// #[derive(Message, Serialize, Deserialize, RemoteMessage)]
    /// #[rtype(result = "u64")]
    /// #[remote(tag = "doc.Add.v1")]
    /// struct Add(u64);
    ///
    /// #[derive(Default)]
    /// struct Counter(u64);
    /// impl Actor for Counter {
    ///     type Context = Context<Self>;
    /// }
    /// impl Handler<Add> for Counter {
    ///     type Result = u64;
    ///     fn handle(&mut self, Add(n): Add, _: &mut Context<Self>) -> u64 {
    ///         self.0 += n;
    ///         self.0
    ///     }
    /// }
    ///
    /// let factories = Factories::new().worker("counter", |_: &ChildContext| {
    ///     Child::start_serving(Counter::default(), |h| h.with::<Add>())
    /// });
    /// ```
    pub fn start_serving<A>(actor: A, accepts: impl FnOnce(Handlers<A>) -> Handlers<A>) -> Child
    where
        A: Actor<Context = actix::Context<A>>,
    {
        let (addr, terminate) = start_stoppable(actor);
        let handlers = accepts(Handlers::new(addr.clone()));
        Child {
            endpoint: Some(handlers.into_endpoint()),
            alive: Box::new(move || addr.connected()),
            terminate,
        }
    }

    /// A child that takes no remote messages, already started, that handles
    /// [`Terminate`] itself.
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
    /// can reach it with [`crate::Group::remote`]; its actor, already
    /// started, handles [`Terminate`] itself.
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

/// Starts `actor` with its stop in its own context: a future that calls
/// `ctx.stop()` once asked through the returned closure. A closure dropped
/// unasked (the group gone) stops nothing, as a `Terminate` never sent
/// would not: the actor then runs while an address to it remains.
fn start_stoppable<A>(actor: A) -> (Addr<A>, Box<dyn Fn(Shutdown)>)
where
    A: Actor<Context = actix::Context<A>>,
{
    let (ask, asked) = oneshot::channel::<()>();
    let addr = A::create(move |ctx| {
        ctx.spawn(
            wrap_future::<_, A>(asked).map(|asked, _, ctx: &mut actix::Context<A>| {
                if asked.is_ok() {
                    ctx.stop();
                }
            }),
        );
        actor
    });
    let ask = Cell::new(Some(ask));
    let terminate = Box::new(move |_: Shutdown| {
        if let Some(ask) = ask.take() {
            let _ = ask.send(());
        }
    });
    (addr, terminate)
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

    /// Whether children of worker kind `kind` can be built here.
    pub fn has(&self, kind: &str) -> bool {
        self.kinds.contains_key(kind)
    }

    pub(crate) fn build(&self, kind: &str, ctx: &ChildContext) -> Option<Child> {
        self.kinds.get(kind).map(|f| f(ctx))
    }
}

/// The group-wide name of a child instance, which
/// [`Group::remote`](crate::Group::remote) and
/// [`Group::lookup`](crate::Group::lookup) take: its path — the tree, then
/// the ids from the root down, nested supervisors included, separated by
/// `/` (`jobs/ingest`, `jobs/pipeline/parse`) — then, for a
/// [`OnePerNode`](crate::PlacementPolicy::OnePerNode) child, `@` and the
/// node (`jobs/cache@node2`), and for an
/// [`OnEveryMember`](crate::PlacementPolicy::OnEveryMember) child, `@` and
/// the member (`jobs/agent@node2/1007`). [`ChildContext::name`] holds it.
pub fn child_name(path: &ChildPath, slot: &SlotKey) -> String {
    ChildName(path, slot).to_string()
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

    #[test]
    fn child_names_are_the_path_then_the_node_or_member_of_the_instance() {
        use crate::transport::{Member, NodeId};
        let path = ChildPath::new("jobs", ["pipeline", "parse"]);
        assert_eq!(child_name(&path, &SlotKey::Single), "jobs/pipeline/parse");
        let cache = ChildPath::new("jobs", ["cache"]);
        assert_eq!(
            child_name(&cache, &SlotKey::Node(NodeId(2))),
            "jobs/cache@node2"
        );
        assert_eq!(
            child_name(&cache, &SlotKey::Member(Member::new(2, 1007))),
            "jobs/cache@node2/1007"
        );
    }

    fn context() -> ChildContext {
        ChildContext {
            path: ChildPath::new("t", ["w"]),
            slot: SlotKey::Single,
            incarnation: IncarnationId(3),
            token: FencingToken { epoch: 1, seq: 2 },
            name: "t/w".into(),
            exit: ExitReporter::default(),
        }
    }

    async fn until_stopped(local: &LocalChild) {
        for _ in 0..100 {
            if !local.alive() {
                break;
            }
            actix_rt::time::sleep(std::time::Duration::from_millis(5)).await;
        }
    }

    #[actix_rt::test]
    async fn a_child_is_told_how_its_spec_says_to_stop_and_its_stop_is_seen() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let child = Child::new(Recorder(seen.clone()).start());
        let (local, endpoint) = LocalChild::new(&context(), child);
        assert!(endpoint.is_none());
        assert!(local.alive());
        local.terminate(Shutdown::Timeout { ms: 7 });
        until_stopped(&local).await;
        assert!(!local.alive(), "the child stopped");
        assert!(!local.exited_normally(), "no normal exit was reported");
        assert_eq!(*seen.lock().unwrap(), vec![Shutdown::Timeout { ms: 7 }]);
    }

    /// An actor with no `Terminate` handler, counting its stops.
    struct Plain(Arc<Mutex<u32>>);

    impl Actor for Plain {
        type Context = actix::Context<Self>;
        fn stopped(&mut self, _: &mut actix::Context<Self>) {
            *self.0.lock().unwrap() += 1;
        }
    }

    #[derive(Message)]
    #[rtype(result = "u32")]
    struct Stops;

    impl Handler<Stops> for Plain {
        type Result = u32;
        fn handle(&mut self, _: Stops, _: &mut actix::Context<Self>) -> u32 {
            *self.0.lock().unwrap()
        }
    }

    #[actix_rt::test]
    async fn a_started_child_runs_until_asked_then_stops_without_a_handler() {
        let stops = Arc::new(Mutex::new(0));
        let (local, endpoint) = LocalChild::new(&context(), Child::start(Plain(stops.clone())));
        assert!(endpoint.is_none(), "no remote messages, no name");
        actix_rt::time::sleep(std::time::Duration::from_millis(20)).await;
        assert!(local.alive(), "nothing stops it before it is asked");
        local.terminate(Shutdown::BrutalKill);
        local.terminate(Shutdown::BrutalKill);
        until_stopped(&local).await;
        assert!(!local.alive(), "the child stopped");
        assert_eq!(*stops.lock().unwrap(), 1, "stopped once, `stopped` ran");
        assert!(!local.exited_normally(), "no normal exit was reported");
    }

    #[actix_rt::test]
    async fn a_started_serving_child_has_an_endpoint_and_stops_when_asked() {
        let stops = Arc::new(Mutex::new(0));
        let mut handlers = None;
        let child = Child::start_serving(Plain(stops.clone()), |h| {
            handlers = Some(h.addr());
            h
        });
        let (local, endpoint) = LocalChild::new(&context(), child);
        assert!(endpoint.is_some(), "registered under its name");
        let addr = handlers.expect("the handlers of the started actor");
        assert_eq!(addr.send(Stops).await.unwrap(), 0, "the started actor runs");
        local.terminate(Shutdown::Timeout { ms: 1_000 });
        until_stopped(&local).await;
        assert!(!local.alive() && !addr.connected(), "the child stopped");
        assert_eq!(*stops.lock().unwrap(), 1);
    }
}
