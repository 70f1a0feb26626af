//! Where a command's time goes: durations of the stages of one request,
//! kept per stage name for the whole process, off unless [`enable`] was
//! called (then each stage costs a clock read and a short lock).
//!
//! A measuring aid for benchmarks, not an interface: the replica runtime
//! records the stages it sees (`replica.taken→sent`: the operation taken
//! by the pump until the multicast carrying it returned;
//! `replica.sent→answered`: from there until this replica answered it —
//! applied it, and under safe delivery the majority acknowledged it; a
//! durable replica's syncs: `replica.sync (fdatasync thread)` and
//! `replica.sync started→back on the actor`), a service records its own
//! around them, and [`report`]
//! prints p50 / mean / p99 per stage. Nothing is decided from it.

use std::collections::BTreeMap;
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

static ON: AtomicBool = AtomicBool::new(false);
static SAMPLES: Mutex<BTreeMap<&'static str, Vec<u32>>> = Mutex::new(BTreeMap::new());

/// Starts recording (for the whole process).
pub fn enable() {
    ON.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    ON.load(Ordering::Relaxed)
}

/// Records that `stage` took `took` (if enabled).
pub fn record(stage: &'static str, took: Duration) {
    if enabled() {
        let us = u32::try_from(took.as_micros()).unwrap_or(u32::MAX);
        SAMPLES
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(stage)
            .or_default()
            .push(us);
    }
}

/// Records a count for `stage` (if enabled), reported like durations.
pub fn count(stage: &'static str, n: usize) {
    record(stage, Duration::from_micros(n as u64));
}

/// One line per stage recorded since the last report, `STAGE n=N
/// p50=… mean=… p99=…` (µs), and forgets them.
pub fn report() -> String {
    let taken = std::mem::take(&mut *SAMPLES.lock().unwrap_or_else(PoisonError::into_inner));
    let mut out = String::new();
    for (stage, mut us) in taken {
        us.sort_unstable();
        let at = |q: f64| us[((us.len() as f64 * q).ceil() as usize).clamp(1, us.len()) - 1];
        let mean = us.iter().map(|u| u64::from(*u)).sum::<u64>() as f64 / us.len() as f64;
        out.push_str(&format!(
            "{stage} n={} p50={} mean={mean:.0} p99={}\n",
            us.len(),
            at(0.5),
            at(0.99)
        ));
    }
    out
}

/// The stages of the commands one replica runtime has under way, by the
/// runtime's command id.
#[derive(Default)]
pub(crate) struct Commands {
    under_way: HashMap<u64, (Instant, Option<Instant>)>,
}

impl Commands {
    /// The pump took command `id` from its handle.
    pub(crate) fn taken(&mut self, id: u64) {
        if enabled() {
            self.under_way.insert(id, (Instant::now(), None));
        }
    }

    /// The multicast carrying command `id` returned.
    pub(crate) fn sent(&mut self, id: u64) {
        if let Some((taken, sent)) = self.under_way.get_mut(&id) {
            let now = Instant::now();
            *sent = Some(now);
            record("replica.taken→sent", now - *taken);
        }
    }

    /// Command `id` was answered (applied here, or failed).
    pub(crate) fn answered(&mut self, id: u64) {
        if let Some((taken, sent)) = self.under_way.remove(&id) {
            let now = Instant::now();
            if let Some(sent) = sent {
                record("replica.sent→answered", now - sent);
            }
            record("replica.taken→answered", now - taken);
        }
    }
}
