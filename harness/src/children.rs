//! Helper processes of the comparison benches: killed when dropped, their
//! stdout read line by line into one channel.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Sender;

/// A helper's line: which helper (an index the bench chose) and what it
/// said.
pub type Said = (usize, String);

/// Processes killed (and reaped) when dropped.
pub struct Procs(pub Vec<Child>);

impl Drop for Procs {
    fn drop(&mut self) {
        for c in &mut self.0 {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// Sends every line `child` writes to stdout to `tx`, tagged `index`, from
/// a thread of its own; the child must have been spawned with a piped
/// stdout.
pub fn forward_lines(child: &mut Child, index: usize, tx: &Sender<Said>) -> Result<(), String> {
    let stdout = child.stdout.take().ok_or("no stdout")?;
    let tx = tx.clone();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send((index, line)).is_err() {
                break;
            }
        }
    });
    Ok(())
}

/// Starts `cmd` (stdin closed, stdout piped) and forwards its lines.
pub fn spawn_lines(mut cmd: Command, index: usize, tx: &Sender<Said>) -> Result<Child, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .map_err(|e| format!("cannot start a helper: {e}"))?;
    forward_lines(&mut child, index, tx)?;
    Ok(child)
}
