//! A directory of one test, under the system's temporary directory,
//! removed when dropped (also when the test fails).

use std::path::{Path, PathBuf};

/// `acpg-NAME-PID`, empty at the start.
pub struct Scratch(PathBuf);

impl Scratch {
    /// A fresh, empty directory for `name` (the process id keeps runs
    /// apart).
    pub fn new(name: &str) -> Scratch {
        let dir = std::env::temp_dir().join(format!("acpg-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("scratch dir");
        Scratch(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
