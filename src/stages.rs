//! Where a message's time goes inside a group member, stage by stage: the
//! time spent in each [`Stage`] of the send and receive paths, summed for
//! the whole process, off unless [`enable`] was called.
//!
//! A measuring aid for benchmarks, not an interface (the `bench` program's
//! stage profile reads it; nothing is decided from it). The timers exist
//! only in a build with the cargo feature `stages` (the bench harness
//! turns it on); without it [`time`] compiles to nothing. With it but off,
//! each stage costs one relaxed atomic load. On, it costs two monotonic clock reads,
//! a few thread-local accesses and atomic additions, so a profiled run is
//! not a throughput run.
//!
//! Stages nest: the multicast is timed inside the send queue's flush, a
//! delivery's decoding inside the runtime's handling of the event, all of
//! them inside the pump's turn. Each stage counts its own time only, what
//! its nested stages took being left out (a profiler's "self" time), so the
//! stages never overlap.
//!
//! **Wall time and CPU time.** The monotonic clock counts the time a thread
//! waited inside a stage: for the daemon (the multicast blocks on its
//! answer) or for a core, when the thread was descheduled in the middle of
//! a sub-microsecond stage by a busier process (on the test cluster, three
//! daemons share two cores with the members). So one interval in
//! [`SAMPLE_EVERY`] is also timed on the thread's CPU clock
//! (`CLOCK_THREAD_CPUTIME_ID`, a system call of about a microsecond here,
//! too dear for every interval), with every stage nested in it, the cost
//! of those reads taken out; each stage's CPU time is the lower of its
//! wall time and the mean of its sampled intervals times its count
//! ([`StageTotal::cpu_nanos`]).

use std::cell::Cell;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::OnceLock;
use std::time::Instant;

/// One stage of a message's way through a member. The send path runs on
/// the sender; the receive path on every member, the sender included.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[repr(usize)]
pub enum Stage {
    /// Send path, the caller's thread: the request head and the user's
    /// message serialized into the envelope (`RemoteAddr::try_tell` and
    /// friends).
    Encode = 0,
    /// Send path, the caller's thread: the send gate's admission and the
    /// push onto the runtime's operation queue.
    Admit,
    /// Send path, the runtime: an operation taken off the queue into the
    /// send queue.
    TakeOp,
    /// Send path, the runtime: the send queue's flush (window, batcher,
    /// the callers told), the multicast itself left out.
    SendQueue,
    /// Send path: the transport's multicast (`cpg_mcast_joined`, a round
    /// trip to the local daemon; the raw binding pays it too).
    Multicast,
    /// Receive path: the runtime asking the transport for its next event,
    /// `cpg_dispatch` left out (readiness, the connection's inbox).
    PollEvent,
    /// Receive path: `cpg_dispatch` (reading from the daemon, the deliver
    /// callback's copy, routing the event to its connection).
    Dispatch,
    /// Receive path: the runtime's handling of one transport event, its
    /// decoding and hand-off left out (the core's commands executed,
    /// metrics, the send window freed).
    Event,
    /// Receive path: a delivery read (frame, batch framing, request head)
    /// and judged by the core.
    Decode,
    /// Receive path, the member hosting the target: the user's type
    /// decoded and handed to its actor (`do_send`).
    Deliver,
    /// The pump's own turn: its loop, budgets and wake-ups, every stage it
    /// calls left out.
    Pump,
    /// The user's handler, when the application times it (the bench's
    /// sink does).
    Handler,
}

impl Stage {
    /// Every stage, in the order of a message's way.
    pub const ALL: [Stage; 12] = [
        Stage::Encode,
        Stage::Admit,
        Stage::TakeOp,
        Stage::SendQueue,
        Stage::Multicast,
        Stage::PollEvent,
        Stage::Dispatch,
        Stage::Event,
        Stage::Decode,
        Stage::Deliver,
        Stage::Pump,
        Stage::Handler,
    ];

    /// A short name, stable for parsing.
    pub fn name(self) -> &'static str {
        match self {
            Stage::Encode => "encode",
            Stage::Admit => "admit",
            Stage::TakeOp => "take_op",
            Stage::SendQueue => "send_queue",
            Stage::Multicast => "multicast",
            Stage::PollEvent => "poll_event",
            Stage::Dispatch => "dispatch",
            Stage::Event => "event",
            Stage::Decode => "decode",
            Stage::Deliver => "deliver",
            Stage::Pump => "pump",
            Stage::Handler => "handler",
        }
    }

    /// The stage named `name` by [`Stage::name`].
    pub fn from_name(name: &str) -> Option<Stage> {
        Stage::ALL.into_iter().find(|s| s.name() == name)
    }
}

const STAGES: usize = Stage::ALL.len();

/// One interval in this many (drawn at random per thread) is also timed on the
/// thread's CPU clock, with everything nested in it.
pub const SAMPLE_EVERY: u32 = 64;

/// The totals of every stage, and whether they are being kept.
struct Book {
    on: AtomicBool,
    /// Intervals timed on the wall clock only, and their self time.
    times: [AtomicU64; STAGES],
    nanos: [AtomicU64; STAGES],
    /// Sampled intervals, their self wall time and self CPU time.
    sampled: [AtomicU64; STAGES],
    sampled_wall: [AtomicU64; STAGES],
    sampled_cpu: [AtomicU64; STAGES],
}

impl Book {
    const fn new() -> Book {
        Book {
            on: AtomicBool::new(false),
            times: [const { AtomicU64::new(0) }; STAGES],
            nanos: [const { AtomicU64::new(0) }; STAGES],
            sampled: [const { AtomicU64::new(0) }; STAGES],
            sampled_wall: [const { AtomicU64::new(0) }; STAGES],
            sampled_cpu: [const { AtomicU64::new(0) }; STAGES],
        }
    }

    fn counters(&self) -> impl Iterator<Item = &AtomicU64> {
        self.times
            .iter()
            .chain(&self.nanos)
            .chain(&self.sampled)
            .chain(&self.sampled_wall)
            .chain(&self.sampled_cpu)
    }

    fn reset(&self) {
        for counter in self.counters() {
            counter.store(0, Ordering::Relaxed);
        }
    }

    fn totals(&self) -> [(Stage, StageTotal); STAGES] {
        Stage::ALL.map(|s| {
            let i = s as usize;
            let load = |c: &[AtomicU64; STAGES]| c[i].load(Ordering::Relaxed);
            let (sampled, wall, cpu) = (
                load(&self.sampled),
                load(&self.sampled_wall),
                load(&self.sampled_cpu),
            );
            let times = load(&self.times) + sampled;
            let nanos = load(&self.nanos).saturating_add(wall);
            // Two bounds from above, the lower one: the wall time, and the
            // sampled intervals' mean CPU time for every interval.
            let cpu_nanos = match sampled {
                0 => nanos,
                _ => nanos.min((cpu as f64 / sampled as f64 * times as f64) as u64),
            };
            (
                s,
                StageTotal {
                    times,
                    nanos,
                    cpu_nanos,
                    sampled,
                },
            )
        })
    }

    #[inline(always)]
    fn time(&'static self, stage: Stage) -> Timing {
        let running = match self.on.load(Ordering::Relaxed) {
            false => None,
            true => Some(Self::begin()),
        };
        Timing {
            book: self,
            stage,
            running,
        }
    }

    /// A timed interval begins (out of line: the hot path, timing off,
    /// is the load and the branch above).
    #[cold]
    #[inline(never)]
    fn begin() -> Running {
        let sampled = THREAD.with(|t| {
            // xorshift32: a pick that cannot fall in step with the stages'
            // own cycle (every n-th interval of a loop of n stages would
            // always be the same stage).
            let mut x = t.draw.get();
            x ^= x << 13;
            x ^= x >> 17;
            x ^= x << 5;
            t.draw.set(x);
            t.sampling.get() || x % SAMPLE_EVERY == 0
        });
        let began = Instant::now();
        let cpu = sampled.then(thread_cpu_ns);
        let outer = THREAD.with(|t| Outer {
            wall: t.nested_wall.replace(0),
            cpu: t.nested_cpu.replace(0),
            sampling: t.sampling.replace(sampled),
        });
        Running { began, cpu, outer }
    }
}

/// The process's book.
static BOOK: Book = Book::new();

/// A thread's place in the stages it is in.
struct ThreadState {
    /// Wall and CPU time of the stages nested in the running one.
    nested_wall: Cell<u64>,
    nested_cpu: Cell<u64>,
    /// Whether the running stage is sampled (its nested ones are too).
    sampling: Cell<bool>,
    /// The last pseudo-random draw: an interval is sampled when it is a
    /// multiple of [`SAMPLE_EVERY`].
    draw: Cell<u32>,
}

thread_local! {
    static THREAD: ThreadState = const {
        ThreadState {
            nested_wall: Cell::new(0),
            nested_cpu: Cell::new(0),
            sampling: Cell::new(false),
            draw: Cell::new(0x9e37_79b9),
        }
    };
}

/// The thread's CPU time, ns; 0 if it cannot be read.
fn thread_cpu_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `clock_gettime` writes one `timespec` into `ts`, which lives
    // across the call; the clock id is a constant Linux knows.
    if unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) } != 0 {
        return 0;
    }
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// What reading the CPU clock costs, (wall ns, CPU ns), measured once.
fn cpu_read_cost() -> (u64, u64) {
    static COST: OnceLock<(u64, u64)> = OnceLock::new();
    *COST.get_or_init(|| {
        const READS: u64 = 200;
        let (wall, cpu) = (Instant::now(), thread_cpu_ns());
        for _ in 0..READS {
            std::hint::black_box(thread_cpu_ns());
        }
        let cpu = thread_cpu_ns().saturating_sub(cpu) / (READS + 1);
        (wall.elapsed().as_nanos() as u64 / (READS + 1), cpu)
    })
}

/// Starts timing stages (for the whole process).
pub fn enable() {
    cpu_read_cost();
    BOOK.on.store(true, Ordering::Relaxed);
}

/// Whether [`enable`] was called.
pub fn enabled() -> bool {
    BOOK.on.load(Ordering::Relaxed)
}

/// Forgets what was timed so far (timing goes on if it was on).
pub fn reset() {
    BOOK.reset();
}

/// What one stage took since the last [`reset`].
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct StageTotal {
    /// Times the stage ran.
    pub times: u64,
    /// Wall-clock nanoseconds spent in it, its nested stages left out.
    pub nanos: u64,
    /// The CPU time the stage took, waiting left out, bounded from above
    /// twice: by [`StageTotal::nanos`], and by the mean CPU time of its
    /// sampled intervals times [`StageTotal::times`]; the lower bound of
    /// the two. (Reading the CPU clock is a system call that leaves the
    /// caches colder, so a sampled interval of a stage well under a
    /// microsecond takes longer than the others: there the wall time is
    /// the closer bound, unless the thread was descheduled inside.)
    pub cpu_nanos: u64,
    /// Of [`StageTotal::times`], the intervals timed on the CPU clock too.
    pub sampled: u64,
}

/// Every stage's total since the last [`reset`], in [`Stage::ALL`]'s order.
pub fn totals() -> [(Stage, StageTotal); STAGES] {
    BOOK.totals()
}

/// What the enclosing stage had when a nested one began.
#[derive(Clone, Copy)]
struct Outer {
    wall: u64,
    cpu: u64,
    sampling: bool,
}

#[derive(Clone, Copy)]
struct Running {
    began: Instant,
    /// The CPU clock at the start, when sampled.
    cpu: Option<u64>,
    outer: Outer,
}

/// Times a stage until dropped (nothing if timing is off, and nothing at
/// all in a build without the `stages` feature: then it holds nothing and
/// [`time`] costs nothing).
#[must_use = "the stage ends when the timer is dropped"]
pub struct Timer(
    // Held for its drop, which ends the interval.
    #[cfg(feature = "stages")]
    #[allow(dead_code)]
    Timing,
);

/// A stage being timed in a book.
struct Timing {
    book: &'static Book,
    stage: Stage,
    running: Option<Running>,
}

/// Starts timing `stage` on this thread (with the `stages` feature; a
/// build without it times nothing, and [`enable`] then leaves every total
/// at zero).
#[cfg(feature = "stages")]
#[inline(always)]
pub fn time(stage: Stage) -> Timer {
    Timer(BOOK.time(stage))
}

/// Starts timing `stage`: in this build (without the `stages` feature),
/// nothing.
#[cfg(not(feature = "stages"))]
#[inline(always)]
pub fn time(_stage: Stage) -> Timer {
    Timer()
}

impl Drop for Timing {
    #[inline(always)]
    fn drop(&mut self) {
        if let Some(running) = self.running {
            self.end(running);
        }
    }
}

impl Timing {
    /// A timed interval ends (out of line, as [`Book::begin`]).
    #[cold]
    #[inline(never)]
    fn end(&self, running: Running) {
        let Running { began, cpu, outer } = running;
        let cpu_took = cpu.map(|start| thread_cpu_ns().saturating_sub(start));
        // From before the first CPU read to after the second: the whole
        // footprint of the interval in its enclosing stage.
        let took = began.elapsed().as_nanos() as u64;
        let (read_wall, read_cpu) = cpu_read_cost();
        let (nested_wall, nested_cpu) = THREAD.with(|t| {
            let nested = (t.nested_wall.get(), t.nested_cpu.get());
            t.nested_wall.set(outer.wall.saturating_add(took));
            // The first read's CPU fell before its own reading.
            let footprint = cpu_took.map_or(0, |c| c + read_cpu);
            t.nested_cpu.set(outer.cpu.saturating_add(footprint));
            t.sampling.set(outer.sampling);
            nested
        });
        let i = self.stage as usize;
        let book = self.book;
        match cpu_took {
            None => {
                book.times[i].fetch_add(1, Ordering::Relaxed);
                book.nanos[i].fetch_add(took.saturating_sub(nested_wall), Ordering::Relaxed);
            }
            Some(cpu_took) => {
                // Its own two reads (wall) and the second one (CPU: the
                // first one's cost fell before its reading) left out.
                let wall = took.saturating_sub(nested_wall + 2 * read_wall);
                let cpu = cpu_took.saturating_sub(nested_cpu + read_cpu);
                book.sampled[i].fetch_add(1, Ordering::Relaxed);
                book.sampled_wall[i].fetch_add(wall, Ordering::Relaxed);
                book.sampled_cpu[i].fetch_add(cpu, Ordering::Relaxed);
            }
        }
    }
}

/// What one timed stage costs in itself, in nanoseconds: the mean of
/// `rounds` empty stages nested in an enclosing one, as that one sees it
/// (clock reads, bookkeeping, the sampled ones' CPU clock reads).
/// Measured on a book of its own: the process's totals are left as they
/// were.
pub fn timer_cost_ns(rounds: u32) -> f64 {
    static CALIBRATION: Book = Book::new();
    cpu_read_cost();
    CALIBRATION.on.store(true, Ordering::Relaxed);
    let rounds = rounds.max(1);
    let began = Instant::now();
    for _ in 0..rounds {
        drop(CALIBRATION.time(Stage::Handler));
    }
    let took = began.elapsed().as_nanos() as f64;
    CALIBRATION.reset();
    took / f64::from(rounds)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn names_round_trip() {
        for s in Stage::ALL {
            assert_eq!(Stage::from_name(s.name()), Some(s));
        }
        assert_eq!(Stage::from_name("nothing"), None);
    }

    /// Busy for `ms` of the thread's own CPU time.
    fn spin(ms: u64) {
        let until = thread_cpu_ns() + ms * 1_000_000;
        while thread_cpu_ns() < until {
            std::hint::spin_loop();
        }
    }

    #[test]
    fn a_stage_counts_its_own_time_only_and_its_waiting_is_not_cpu() {
        static TEST: Book = Book::new();
        // Off: nothing is counted.
        drop(TEST.time(Stage::Pump));
        assert_eq!(TEST.totals()[Stage::Pump as usize].1, StageTotal::default());
        TEST.on.store(true, Ordering::Relaxed);
        // Sampled, as if inside a sampled stage.
        THREAD.with(|t| t.sampling.set(true));
        let began = Instant::now();
        {
            let _outer = TEST.time(Stage::Pump);
            spin(20);
            let _inner = TEST.time(Stage::Multicast);
            std::thread::sleep(Duration::from_millis(40));
        }
        let wall = began.elapsed().as_nanos() as u64;
        THREAD.with(|t| t.sampling.set(false));
        let t = TEST.totals();
        let (pump, mcast) = (t[Stage::Pump as usize].1, t[Stage::Multicast as usize].1);
        assert_eq!(
            (pump.times, mcast.times, pump.sampled, mcast.sampled),
            (1, 1, 1, 1)
        );
        assert!(mcast.nanos >= 40_000_000, "{mcast:?}");
        assert!(pump.nanos >= 20_000_000, "{pump:?}");
        // Counted twice, the two would add up to more than the wall time.
        assert!(
            pump.nanos + mcast.nanos <= wall,
            "{pump:?} {mcast:?} {wall}"
        );
        // The sleep is waiting, not CPU; the spin is CPU.
        assert!(mcast.cpu_nanos < 5_000_000, "{mcast:?}");
        assert!(pump.cpu_nanos >= 15_000_000, "{pump:?}");
        TEST.reset();
        assert_eq!(TEST.totals()[Stage::Pump as usize].1, StageTotal::default());
    }

    #[test]
    fn one_interval_in_so_many_is_sampled() {
        static TEST: Book = Book::new();
        TEST.on.store(true, Ordering::Relaxed);
        let rounds = SAMPLE_EVERY * 200;
        for _ in 0..rounds {
            drop(TEST.time(Stage::Decode));
        }
        let t = TEST.totals()[Stage::Decode as usize].1;
        assert_eq!(t.times, u64::from(rounds));
        // About 200 of them.
        assert!((100..=300).contains(&t.sampled), "{t:?}");
        // The lower of the two bounds.
        assert!(t.cpu_nanos <= t.nanos, "{t:?}");
    }

    #[test]
    fn the_calibration_leaves_the_process_totals_alone() {
        let before = totals();
        let cost = timer_cost_ns(1000);
        assert!(cost > 0.0 && cost < 1_000_000.0, "{cost}");
        assert_eq!(totals(), before);
    }
}
