//! A fresh actix system on simulated time, for the seeded schedules: the
//! runtime's clock is paused, so timers fire in order without real waiting
//! and a seed replays the same run.

/// A fresh system on simulated time (one per seed, so no run inherits
/// another's clock or actors).
pub fn simulated() -> actix::SystemRunner {
    actix::System::with_tokio_rt(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .start_paused(true)
            .build()
            .expect("a runtime")
    })
}
