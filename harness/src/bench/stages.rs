//! The stage profile of a bench member: where a message's time goes inside
//! actix-cpg on each member process ([`actix_cpg::stages`]), next to the
//! process's CPU time over the same stretch, per message.
//!
//! A member marks the moment it is ready ([`Ready::mark`]: joined, its
//! sink registered, before any message of the run): the stage totals are
//! reset and its CPU time and deliveries so far noted. At the end
//! [`Ready::finish`] turns what happened since into a [`StageReport`],
//! which travels to the orchestrator in the member's `REPORT` line.

use actix_cpg::stages::{self, Stage, StageTotal};

/// What a member measured from the moment it was ready to its end.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct StageReport {
    /// CPU time of its process in user space, µs.
    pub user_us: u64,
    /// CPU time of its process in the kernel (system calls, page faults,
    /// wake-ups), µs.
    pub sys_us: u64,
    /// Minor page faults of its process.
    pub minflt: u64,
    /// Messages delivered to it.
    pub msgs: u64,
    /// What one timed stage costs in itself, ns ([`stages::timer_cost_ns`]);
    /// 0 when stages were not timed.
    pub timer_ns: f64,
    /// Each stage's total, when stages were timed.
    pub totals: Vec<(Stage, StageTotal)>,
}

impl StageReport {
    /// The words of a `REPORT` line.
    pub fn to_words(&self) -> String {
        let totals = self
            .totals
            .iter()
            .map(|(s, t)| {
                let name = s.name();
                format!(
                    "{name}:{}:{}:{}:{}",
                    t.times, t.nanos, t.cpu_nanos, t.sampled
                )
            })
            .collect::<Vec<_>>()
            .join(",");
        format!(
            "run_user={} run_sys={} run_minflt={} run_msgs={} timer_ns={:.1} stages={}",
            self.user_us,
            self.sys_us,
            self.minflt,
            self.msgs,
            self.timer_ns,
            if totals.is_empty() { "-" } else { &totals }
        )
    }

    /// Takes one word of a `REPORT` line; `false` if it is not one of
    /// [`StageReport::to_words`]'s (or does not parse).
    pub fn take_word(&mut self, key: &str, value: &str) -> bool {
        match key {
            "run_user" => value.parse().map(|v| self.user_us = v).is_ok(),
            "run_sys" => value.parse().map(|v| self.sys_us = v).is_ok(),
            "run_minflt" => value.parse().map(|v| self.minflt = v).is_ok(),
            "run_msgs" => value.parse().map(|v| self.msgs = v).is_ok(),
            "timer_ns" => value.parse().map(|v| self.timer_ns = v).is_ok(),
            "stages" if value == "-" => true,
            "stages" => {
                let parsed: Option<Vec<_>> = value
                    .split(',')
                    .map(|t| {
                        let mut parts = t.split(':');
                        let stage = Stage::from_name(parts.next()?)?;
                        let mut number = || parts.next()?.parse().ok();
                        let total = StageTotal {
                            times: number()?,
                            nanos: number()?,
                            cpu_nanos: number()?,
                            sampled: number()?,
                        };
                        Some((stage, total))
                    })
                    .collect();
                parsed.map(|p| self.totals = p).is_some()
            }
            _ => false,
        }
    }

    fn total(&self, stage: Stage) -> StageTotal {
        self.totals
            .iter()
            .find(|(s, _)| *s == stage)
            .map_or(StageTotal::default(), |(_, t)| *t)
    }

    /// CPU µs per message spent in `stage` ([`StageTotal::cpu_nanos`]);
    /// 0 if it never ran.
    pub fn us_per_msg(&self, stage: Stage) -> f64 {
        self.total(stage).cpu_nanos as f64 / 1000.0 / self.msgs.max(1) as f64
    }

    /// Wall-clock µs per message spent in `stage`, waiting included.
    pub fn wall_us_per_msg(&self, stage: Stage) -> f64 {
        self.total(stage).nanos as f64 / 1000.0 / self.msgs.max(1) as f64
    }

    /// Whether `stage` ran at all.
    pub fn ran(&self, stage: Stage) -> bool {
        self.total(stage).times > 0
    }

    /// Timed stages per message, all stages together.
    pub fn timers_per_msg(&self) -> f64 {
        let times: u64 = self.totals.iter().map(|(_, t)| t.times).sum();
        times as f64 / self.msgs.max(1) as f64
    }

    /// CPU time of the process per message, user and system, µs.
    pub fn cpu_us_per_msg(&self) -> f64 {
        (self.user_us + self.sys_us) as f64 / self.msgs.max(1) as f64
    }

    /// User-space CPU time of the process per message, µs.
    pub fn user_us_per_msg(&self) -> f64 {
        self.user_us as f64 / self.msgs.max(1) as f64
    }

    /// Minor page faults of the process per message.
    pub fn minflt_per_msg(&self) -> f64 {
        self.minflt as f64 / self.msgs.max(1) as f64
    }

    /// Kernel CPU time of the process per message, µs.
    pub fn sys_us_per_msg(&self) -> f64 {
        self.sys_us as f64 / self.msgs.max(1) as f64
    }
}

/// CPU time this process used so far, (user, system) in µs, and its minor
/// page faults (`getrusage`); zeros if it cannot tell.
pub fn rusage() -> (u64, u64, u64) {
    // SAFETY: `getrusage` writes one `rusage` into the zeroed value it is
    // given and reads nothing else; RUSAGE_SELF is always valid.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::getrusage(libc::RUSAGE_SELF, &mut usage) != 0 {
            return (0, 0, 0);
        }
        usage
    };
    let us = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    (
        us(usage.ru_utime),
        us(usage.ru_stime),
        usage.ru_minflt as u64,
    )
}

/// The moment a member was ready.
pub struct Ready {
    usage: (u64, u64, u64),
    delivered: u64,
    timer_ns: f64,
}

impl Ready {
    /// Marks it: resets the stage totals (when timed), notes the CPU time
    /// and the `delivered` count so far.
    pub fn mark(delivered: u64) -> Ready {
        let timer_ns = if stages::enabled() {
            stages::reset();
            stages::timer_cost_ns(100_000)
        } else {
            0.0
        };
        Ready {
            usage: rusage(),
            delivered,
            timer_ns,
        }
    }

    /// What happened since, `delivered` being the count now.
    pub fn finish(&self, delivered: u64) -> StageReport {
        let (user, sys, minflt) = rusage();
        StageReport {
            user_us: user.saturating_sub(self.usage.0),
            sys_us: sys.saturating_sub(self.usage.1),
            minflt: minflt.saturating_sub(self.usage.2),
            msgs: delivered.saturating_sub(self.delivered),
            timer_ns: self.timer_ns,
            totals: if stages::enabled() {
                stages::totals().into_iter().collect()
            } else {
                Vec::new()
            },
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_report_survives_its_words() {
        let report = StageReport {
            user_us: 123_456,
            sys_us: 7,
            minflt: 300,
            msgs: 20_000,
            timer_ns: 41.5,
            totals: vec![
                (
                    Stage::Encode,
                    StageTotal {
                        times: 20_000,
                        nanos: 3_500_000,
                        cpu_nanos: 3_000_000,
                        sampled: 78,
                    },
                ),
                (
                    Stage::Pump,
                    StageTotal {
                        times: 7,
                        nanos: 9,
                        cpu_nanos: 9,
                        sampled: 0,
                    },
                ),
            ],
        };
        let mut back = StageReport::default();
        for word in report.to_words().split(' ') {
            let (k, v) = word.split_once('=').unwrap();
            assert!(back.take_word(k, v), "{word}");
        }
        assert_eq!(back, report);
        assert!((back.us_per_msg(Stage::Encode) - 0.15).abs() < 1e-9);
        assert!((back.wall_us_per_msg(Stage::Encode) - 0.175).abs() < 1e-9);
        assert_eq!(back.us_per_msg(Stage::Dispatch), 0.0);
        assert!(!back.take_word("stages", "encode:1"));
        assert!(!back.take_word("other", "1"));
    }
}
