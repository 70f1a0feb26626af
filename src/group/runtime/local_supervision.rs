//! This member's side of supervision: the children it runs, the trees it
//! started, and what it puts in the stream for the engine (quorum facts,
//! ticks, exits). Decisions are the engine's (`crate::supervisor`), taken
//! from the ordered stream; this module carries them out locally — start,
//! stop, register a child's name — and reconciles the children running
//! here with the engine's state after a state transfer.

use super::*;

/// This member's side of supervision.
#[derive(Default)]
pub(super) struct LocalSupervision {
    /// Factories of the trees this member started, by tree name.
    pub(super) trees: HashMap<String, Factories>,
    /// Tree starts awaiting their place in the order, with the fingerprint
    /// of the spec this member asked for.
    pub(super) starting: HashMap<String, (Fingerprint, Done<Result<(), GroupError>>)>,
    /// Children running here, in a defined order: the exits this member
    /// reports in one pass go out in the same order on every run.
    pub(super) children: BTreeMap<(ChildPath, SlotKey), LocalChild>,
    /// Child names whose registration lost to a former host that has not
    /// released them yet; registered again when it does.
    pub(super) wanted: HashMap<String, Endpoint>,
    /// What the quorum service last said on this node: quorate, and the
    /// nodes of its partition.
    pub(super) quorate: Option<(bool, Vec<crate::transport::NodeId>)>,
    /// A reconcile waits for the engine's merge round to end: until then
    /// the engine's state is one side's, not the group's.
    pub(super) reconcile_pending: bool,
    pub(super) events: Option<broadcast::Sender<SupervisionEvent>>,
}

impl GroupActor {
    /// Whether this member is the lowest participant: the one that puts
    /// its clock into the stream (observers decide nothing).
    pub(super) fn is_lowest(&self) -> bool {
        let local = self.local();
        self.core.role() == Role::Participant
            && self
                .core
                .view()
                .iter()
                .find(|m| !self.core.is_observer(**m))
                == Some(&local)
    }

    /// Puts this node's quorum state into the stream (the engine decides
    /// from the stream, never from the local notification). Observers
    /// put no fact in.
    pub(super) fn announce_quorum(&mut self) {
        if self.core.role() == Role::Observer {
            return;
        }
        if let (Some((quorate, nodes)), Some(_)) = (&self.sup.quorate, self.core.view().first()) {
            if self.ready.is_none() {
                let msg = SupervisionMsg::Quorum {
                    quorate: *quorate,
                    nodes: nodes.clone(),
                };
                self.enqueue(Kind::Supervision, &msg, OnSent::Nothing);
            }
        }
    }

    pub(super) fn tick(&mut self) {
        if self.ready.is_some() || !self.is_lowest() || self.core.engine().children().is_empty() {
            return;
        }
        let wall_ms = self.conn.wall_clock_us() / 1000;
        // The group refuses a tick too far past the stream time: a clock
        // ahead of it (or a stream time left behind while nothing ticked)
        // catches up a step per tick.
        let stream_ms = self.core.engine().now_ms();
        let now_ms = if stream_ms == 0 {
            wall_ms
        } else {
            wall_ms.min(stream_ms.saturating_add(MAX_TICK_STEP_MS))
        };
        self.enqueue(
            Kind::Supervision,
            &SupervisionMsg::Tick { now_ms },
            OnSent::Nothing,
        );
    }

    /// Reports children that stopped on their own.
    pub(super) fn watch_children(&mut self) {
        let exited: Vec<(ChildPath, SlotKey)> = self
            .sup
            .children
            .iter()
            .filter(|(_, c)| !c.alive())
            .map(|(k, _)| k.clone())
            .collect();
        for key in exited {
            if let Some(child) = self.sup.children.remove(&key) {
                let normal = child.exited_normally();
                debug!(path = %key.0, incarnation = %child.incarnation, normal, "child stopped");
                self.telemetry.exit_seen(&key);
                self.release_child_name(&child.name);
                self.enqueue(
                    Kind::Supervision,
                    &SupervisionMsg::ChildExited {
                        path: key.0,
                        incarnation: child.incarnation,
                        normal,
                    },
                    OnSent::Nothing,
                );
            }
        }
    }

    /// Carries out a supervision decision: [`Self::act_on`], then
    /// [`Self::report`].
    pub(super) fn supervise(&mut self, output: Output) {
        self.act_on(&output);
        self.report(output);
    }

    /// What a decision asks of this member: children started and stopped,
    /// in the engine's order, a refused tree start answered, and a
    /// reconcile left due by a merge round. Nothing logged or published:
    /// at a confchg this runs ahead of everything else of the turn (rule 1
    /// of the runtime).
    pub(super) fn act_on(&mut self, output: &Output) {
        let local = self.local();
        // Before any start: a restart's time runs from the exit.
        for event in &output.events {
            if let SupervisionEvent::ChildExited { path, slot, .. } = event {
                self.telemetry.exit_seen(&(path.clone(), *slot));
            }
        }
        for command in &output.commands {
            match command {
                SupCommand::StartChild {
                    path,
                    slot,
                    kind,
                    host,
                    incarnation,
                    token,
                } if *host == local => {
                    self.start_child(path.clone(), *slot, kind, *incarnation, *token);
                }
                SupCommand::StopChild {
                    path,
                    slot,
                    host,
                    incarnation,
                    reason,
                    shutdown,
                    ..
                } if *host == local => {
                    debug!(%path, %incarnation, ?reason, "stopping child");
                    self.stop_child(&(path.clone(), *slot), *incarnation, *shutdown);
                }
                SupCommand::RefuseTree { name, by, why } if *by == local => {
                    self.sup.trees.remove(name);
                    if let Some((_, done)) = self.sup.starting.remove(name) {
                        let _ = done.send(Err(GroupError::TreeRefused(why.clone())));
                    }
                }
                _ => {}
            }
        }
        if self.sup.reconcile_pending {
            self.reconcile();
        }
    }

    /// The rest of a decision, once [`Self::act_on`] carried it out:
    /// logged, counted, and published to the supervision subscribers.
    pub(super) fn report(&mut self, output: Output) {
        let local = self.local();
        // Inside the runtime's span, which names the group and member.
        let span = tracing::debug_span!("supervision", seq = self.core.engine().seq());
        let _entered = span.enter();
        for command in &output.commands {
            debug!(?command, "decision");
            match command {
                SupCommand::StartChild {
                    path, slot, host, ..
                } if *host != local => {
                    self.telemetry.started_elsewhere(&(path.clone(), *slot));
                }
                SupCommand::Escalated { tree, at } => {
                    warn!(%tree, %at, "supervision tree gave up");
                }
                _ => {}
            }
        }
        for event in &output.events {
            match event {
                SupervisionEvent::Ignored { why } => debug!(?why, "supervision: nothing to do"),
                event => info!("{event}"),
            }
        }
        if let Some(events) = &self.sup.events {
            for event in output.events {
                let _ = events.send(event);
            }
        }
        self.resolve_tree_starts();
    }

    /// A tree start is done once the group runs a live tree of that name
    /// with this member's spec (whoever's start got there first) and this
    /// member's own start is in: from then on the engine places children
    /// here.
    pub(super) fn resolve_tree_starts(&mut self) {
        let engine = self.core.engine();
        let local = self.local();
        let done: Vec<String> = self
            .sup
            .starting
            .iter()
            .filter(|(name, (fp, _))| {
                engine.tree_fingerprint(name) == Some(*fp) && engine.took_part(name, local)
            })
            .map(|(name, _)| name.clone())
            .collect();
        for name in done {
            if let Some((_, done)) = self.sup.starting.remove(&name) {
                let _ = done.send(Ok(()));
            }
        }
    }

    pub(super) fn start_child(
        &mut self,
        path: ChildPath,
        slot: SlotKey,
        kind: &str,
        incarnation: crate::supervisor::IncarnationId,
        token: crate::supervisor::FencingToken,
    ) {
        let key = (path.clone(), slot);
        if let Some(old) = self.sup.children.remove(&key) {
            // A new incarnation replaces whatever ran here before.
            old.terminate(Shutdown::BrutalKill);
            self.release_child_name(&old.name);
        }
        let ctx = ChildContext {
            name: child_name(&path, &slot),
            path,
            slot,
            incarnation,
            token,
            exit: ExitReporter::default(),
        };
        let Some(child) = self
            .sup
            .trees
            .get(&ctx.path.tree)
            .and_then(|f| f.build(kind, &ctx))
        else {
            // The engine places a child only on a member that said it can
            // build its kind, and the factories are kept before that is
            // said: a placement here without one is a broken promise.
            warn!(path = %ctx.path, kind, "placed here, but this member has no factory for its kind");
            return;
        };
        let (local, endpoint) = LocalChild::new(&ctx, child);
        debug!(name = %ctx.name, incarnation = %incarnation, %token, "child started");
        self.telemetry.running_here(&key);
        self.sup.children.insert(key, local);
        if let Some(endpoint) = endpoint {
            self.register_child_name(ctx.name, endpoint);
        }
    }

    pub(super) fn stop_child(
        &mut self,
        key: &(ChildPath, SlotKey),
        incarnation: crate::supervisor::IncarnationId,
        shutdown: Shutdown,
    ) {
        if self.sup.children.get(key).map(|c| c.incarnation) == Some(incarnation) {
            if let Some(child) = self.sup.children.remove(key) {
                child.terminate(shutdown);
                self.release_child_name(&child.name);
                let grace = match shutdown {
                    Shutdown::BrutalKill => Some(Duration::ZERO),
                    Shutdown::Timeout { ms } => Some(Duration::from_millis(ms)),
                    Shutdown::Infinity => None,
                };
                if let Some(grace) = grace {
                    // Only a report: the child no longer gets remote
                    // messages, and nothing is decided from this timer.
                    actix::spawn(async move {
                        tokio::time::sleep(grace + CHILD_WATCH_INTERVAL).await;
                        if child.alive() {
                            warn!(name = %child.name, ?shutdown, "child still running after its shutdown time");
                        }
                    });
                }
            }
        }
    }

    pub(super) fn register_child_name(&mut self, name: String, endpoint: crate::remote::Endpoint) {
        if self.endpoints.contains_key(&name) {
            return;
        }
        let token = self.next_id();
        self.endpoints.insert(name.clone(), endpoint);
        self.registering.insert(token, (name.clone(), None));
        self.enqueue(
            Kind::Registry,
            &RegistryOp::Register { name, token },
            OnSent::Registering(token),
        );
    }

    pub(super) fn release_child_name(&mut self, name: &str) {
        self.sup.wanted.remove(name);
        if self.endpoints.remove(name).is_some() {
            self.enqueue(
                Kind::Registry,
                &RegistryOp::Unregister {
                    name: name.to_owned(),
                },
                OnSent::Nothing,
            );
        }
    }

    /// Makes the children running here exactly the engine's incarnations
    /// for this member (after a state hand-over, or once factories arrive).
    pub(super) fn reconcile(&mut self) {
        self.resolve_tree_starts();
        if self.core.engine().is_merging() {
            self.sup.reconcile_pending = true;
            return;
        }
        self.sup.reconcile_pending = false;
        let local = self.local();
        let engine = self.core.engine();
        let stale: Vec<((ChildPath, SlotKey), crate::supervisor::IncarnationId)> = self
            .sup
            .children
            .iter()
            .filter(|((path, _), c)| !engine.is_current(path, c.incarnation, local))
            .map(|(k, c)| (k.clone(), c.incarnation))
            .collect();
        let mut missing = Vec::new();
        for status in engine.running() {
            if let SlotStatus::Running {
                host,
                incarnation,
                token,
            } = status.status
            {
                let key = (status.path.clone(), status.slot);
                let here = self.sup.children.get(&key).map(|c| c.incarnation);
                if host == local && here != Some(incarnation) {
                    missing.push((status.path, status.slot, incarnation, token));
                }
            }
        }
        for (key, incarnation) in stale {
            self.stop_child(&key, incarnation, Shutdown::BrutalKill);
        }
        for (path, slot, incarnation, token) in missing {
            let kind = engine_kind(self.core.engine(), &path);
            if let Some(kind) = kind {
                self.start_child(path, slot, &kind, incarnation, token);
            }
        }
    }
}

/// The worker kind of `path`, from the tree's spec as the engine holds it.
pub(super) fn engine_kind(engine: &crate::supervisor::Engine, path: &ChildPath) -> Option<String> {
    engine.worker_kind(path)
}
