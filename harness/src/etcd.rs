//! A three-member etcd cluster on the test cluster's node namespaces, for
//! the etcd comparison of the `bench` binary (`--vs-etcd`).
//!
//! ```text
//!  EtcdCluster::start ── per node ──► ip netns exec acpg-nN etcd --name nN
//!        │                              --listen-client-urls http://10.213.57.N:2379
//!        │                              --listen-peer-urls   http://10.213.57.N:2380
//!        │                              --data-dir TMP/nN [--unsafe-no-fsync]
//!        └── polls `etcdctl endpoint health` (in acpg-n1) until every member answers
//!  drop ───► SIGKILL every member, remove TMP
//! ```
//!
//! Rules:
//!
//! 1. The members run Debian's `etcd-server` (3.4) with its defaults
//!    (heartbeat 100 ms, election timeout 1000 ms, snapshot every 100,000
//!    entries), a fresh data directory each under one temporary directory,
//!    and a cluster token of this run: a start never meets an old member.
//! 2. `--unsafe-no-fsync` ([`Fsync::Off`]) keeps every write but skips
//!    the fsyncs of the write-ahead log and of the backend: the
//!    counterpart of an in-memory replica. (In 3.4 the flag is accepted
//!    but missing from `etcd --help`.)
//! 3. The cluster is up once `etcdctl endpoint health` succeeds for all
//!    three endpoints; a member that exits before is an error with its
//!    log's tail.
//! 4. Dropping the cluster kills every member it started (also when the
//!    caller panics) and removes the data directories.
//! 5. When `etcd` or `etcdctl` is missing, [`ensure_installed`] installs
//!    Debian's `etcd-server` and `etcd-client` with `apt-get`, saying so.
//! 6. A member can be SIGKILLed and started again on its data directory
//!    ([`EtcdCluster::kill`], [`EtcdCluster::restart`]), as after a crash.
//! 7. [`EtcdCluster::remove_member`] removes a member from the cluster,
//!    [`EtcdCluster::add_member_empty`] adds it back with an empty data
//!    directory: a late joiner that
//!    must catch up the whole state from the leader.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Whether etcd fsyncs its log and backend.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fsync {
    /// etcd's default: every commit is fsynced before it is acknowledged.
    On,
    /// `--unsafe-no-fsync`.
    Off,
}

/// The test cluster's nodes (namespaces `acpg-n1..3`).
pub const NODES: u32 = 3;

/// Node `n`'s address on the test cluster (`scripts/cluster.sh`).
pub fn node_addr(n: u32) -> String {
    format!("10.213.57.{n}")
}

/// Node `n`'s etcd client URL.
pub fn client_url(n: u32) -> String {
    format!("http://{}:2379", node_addr(n))
}

fn peer_url(n: u32) -> String {
    format!("http://{}:2380", node_addr(n))
}

/// Installs `etcd-server` and `etcd-client` (Debian) when `etcd` or
/// `etcdctl` is not on the PATH (running `apt-get update` first if the
/// install fails).
pub fn ensure_installed() -> Result<(), String> {
    // `etcd --version`, `etcdctl version` (3.4's etcdctl has no --version).
    let found = |bin: &str| {
        Command::new(bin)
            .arg(if bin == "etcd" {
                "--version"
            } else {
                "version"
            })
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    if found("etcd") && found("etcdctl") {
        return Ok(());
    }
    eprintln!("etcd: `etcd` or `etcdctl` is missing: apt-get install -y etcd-server etcd-client");
    let apt = |args: &[&str]| {
        Command::new("apt-get")
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    };
    let install = ["install", "-y", "etcd-server", "etcd-client"];
    // Package lists of a fresh machine may be missing or old.
    let installed = apt(&install) || (apt(&["update"]) && apt(&install));
    if !installed || !found("etcd") || !found("etcdctl") {
        return Err(
            "could not install etcd (as root: apt-get install -y etcd-server etcd-client)".into(),
        );
    }
    Ok(())
}

/// Three etcd members, one per node namespace; stopped and removed when
/// dropped (rule 4).
pub struct EtcdCluster {
    /// Member `n` at index `n - 1`; `None` while it is killed.
    members: Vec<Option<Child>>,
    dir: PathBuf,
    fsync: Fsync,
    token: String,
}

impl EtcdCluster {
    /// Starts the members and waits until all three are healthy (rules 1
    /// to 3).
    pub fn start(fsync: Fsync) -> Result<EtcdCluster, String> {
        ensure_installed()?;
        let dir =
            std::env::temp_dir().join(format!("acpg-etcd-{}-{}", std::process::id(), next_start()));
        // A leftover of an earlier process with the same id.
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("{}: {e}", dir.display()))?;
        let token = format!("acpg-bench-{}", dir.display()).replace('/', "-");
        let mut cluster = EtcdCluster {
            members: Vec::new(),
            dir,
            fsync,
            token,
        };
        let initial: Vec<String> = (1..=NODES)
            .map(|n| format!("n{n}={}", peer_url(n)))
            .collect();
        for n in 1..=NODES {
            let child = cluster.spawn(n, &initial.join(","), "new")?;
            cluster.members.push(Some(child));
        }
        cluster.wait_healthy(Duration::from_secs(60))?;
        Ok(cluster)
    }

    /// Starts member `n`'s etcd on its data directory (an existing
    /// directory ignores `initial` and `state`).
    fn spawn(&self, n: u32, initial: &str, state: &str) -> Result<Child, String> {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log(n))
            .map_err(|e| e.to_string())?;
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &format!("acpg-n{n}"), "etcd"])
            .args(["--name", &format!("n{n}")])
            .arg("--data-dir")
            .arg(self.data_dir(n))
            .args(["--listen-client-urls", &client_url(n)])
            .args(["--advertise-client-urls", &client_url(n)])
            .args(["--listen-peer-urls", &peer_url(n)])
            .args(["--initial-advertise-peer-urls", &peer_url(n)])
            .args(["--initial-cluster", initial])
            .args(["--initial-cluster-state", state])
            .args(["--initial-cluster-token", &self.token])
            .args(["--logger", "zap", "--log-outputs", "stderr"]);
        if self.fsync == Fsync::Off {
            cmd.arg("--unsafe-no-fsync");
        }
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(log)
            .spawn()
            .map_err(|e| format!("cannot start etcd on node {n}: {e}"))
    }

    fn data_dir(&self, n: u32) -> PathBuf {
        self.dir.join(format!("n{n}"))
    }

    /// SIGKILLs member `n` (rule 6); nothing if it is not running.
    pub fn kill(&mut self, n: u32) {
        if let Some(mut m) = self.members[n as usize - 1].take() {
            let _ = m.kill();
            let _ = m.wait();
        }
    }

    /// Starts member `n` again on its data directory, as after a crash
    /// (rule 6); does not wait for it.
    pub fn restart(&mut self, n: u32) -> Result<(), String> {
        self.kill(n);
        self.start_existing(n)
    }

    /// Starts member `n` into the existing cluster of every node.
    fn start_existing(&mut self, n: u32) -> Result<(), String> {
        let initial: Vec<String> = (1..=NODES)
            .map(|n| format!("n{n}={}", peer_url(n)))
            .collect();
        let child = self.spawn(n, &initial.join(","), "existing")?;
        self.members[n as usize - 1] = Some(child);
        Ok(())
    }

    /// Runs `etcdctl args` until it succeeds, or fails saying `done` (an
    /// attempt that timed out on the client may have done it), for up to
    /// 30 s, every 0.5 s.
    fn etcdctl_until_done(&self, args: &[&str], done: &str) -> Result<(), String> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while let Err(e) = self.etcdctl(args) {
            if e.contains(done) {
                break;
            }
            if Instant::now() > deadline {
                return Err(e);
            }
            std::thread::sleep(Duration::from_millis(500));
        }
        Ok(())
    }

    /// Removes member `n` from the cluster (`etcdctl member remove`),
    /// kills it and deletes its data directory (rule 7).
    pub fn remove_member(&mut self, n: u32) -> Result<(), String> {
        let list = self.etcdctl(&["member", "list", "-w", "json"])?;
        let id = member_id(&list, &format!("n{n}"))
            .ok_or_else(|| format!("member n{n} not in the member list: {list}"))?;
        // etcd refuses a removal until its leader has been connected to a
        // quorum for 5 s (`etcdserver: unhealthy cluster`), as right after
        // a start.
        self.etcdctl_until_done(
            &["member", "remove", &format!("{id:x}")],
            "member not found",
        )?;
        self.kill(n);
        let _ = std::fs::remove_dir_all(self.data_dir(n));
        Ok(())
    }

    /// Adds member `n` back (`etcdctl member add`) and starts it with an
    /// empty data directory (rule 7); does not wait for it to catch up.
    pub fn add_member_empty(&mut self, n: u32) -> Result<(), String> {
        let name = format!("n{n}");
        let peer = peer_url(n);
        self.etcdctl_until_done(
            &["member", "add", &name, "--peer-urls", &peer],
            "already exists",
        )?;
        self.start_existing(n)
    }

    /// The node whose member leads Raft, as the members that answer say;
    /// `None` if none answers or they name no running member.
    pub fn raft_leader(&self) -> Option<u32> {
        let out = self.etcdctl(&["endpoint", "status", "-w", "json"]).ok()?;
        let v: serde_json::Value = serde_json::from_str(&out).ok()?;
        let statuses = v.as_array()?;
        let leader = statuses
            .iter()
            .find_map(|s| s.get("Status")?.get("leader")?.as_u64())?;
        statuses.iter().find_map(|s| {
            let me = s.get("Status")?.get("header")?.get("member_id")?.as_u64()?;
            let endpoint = s.get("Endpoint")?.as_str()?;
            (me == leader)
                .then(|| (1..=NODES).find(|n| client_url(*n) == endpoint))
                .flatten()
        })
    }

    /// What the members other than `away`'s say of their Raft state, of
    /// the keys under `prefix` and of the leases, from another node's
    /// namespace: for a report when a round goes wrong.
    pub fn diagnose(&self, away: u32, prefix: &str) -> String {
        let from = (1..=NODES).find(|n| *n != away).unwrap_or(1);
        let endpoints: Vec<String> = (1..=NODES).filter(|n| *n != away).map(client_url).collect();
        let mut out = String::new();
        for args in [
            vec!["endpoint", "status", "-w", "table"],
            vec!["get", "--prefix", prefix, "-w", "fields"],
            vec!["lease", "list"],
        ] {
            let o = Command::new("ip")
                .args(["netns", "exec", &format!("acpg-n{from}"), "etcdctl"])
                .args([
                    "--endpoints",
                    &endpoints.join(","),
                    "--command-timeout",
                    "5s",
                ])
                .args(&args)
                .env("ETCDCTL_API", "3")
                .output();
            if let Ok(o) = o {
                out.push_str(&String::from_utf8_lossy(&o.stdout));
                out.push_str(&String::from_utf8_lossy(&o.stderr));
            }
        }
        out
    }

    /// Runs `etcdctl ARGS` in node 1's namespace against the members that
    /// run; its stdout.
    fn etcdctl(&self, args: &[&str]) -> Result<String, String> {
        let endpoints: Vec<String> = (1..=NODES)
            .filter(|n| self.members[*n as usize - 1].is_some())
            .map(client_url)
            .collect();
        let out = Command::new("ip")
            .args(["netns", "exec", "acpg-n1", "etcdctl"])
            .args([
                "--endpoints",
                &endpoints.join(","),
                "--command-timeout",
                "5s",
            ])
            .args(args)
            .env("ETCDCTL_API", "3")
            .stdin(Stdio::null())
            .output()
            .map_err(|e| format!("cannot run etcdctl: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "etcdctl {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// The client URLs of the three members.
    pub fn endpoints(&self) -> Vec<String> {
        (1..=NODES).map(client_url).collect()
    }

    fn log(&self, n: u32) -> PathBuf {
        self.dir.join(format!("n{n}.log"))
    }

    fn log_tail(&self, n: u32) -> String {
        let text = std::fs::read_to_string(self.log(n)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(5)..].join("\n")
    }

    /// Waits until every member answers `etcdctl endpoint health`
    /// (rule 3).
    pub fn wait_healthy(&mut self, limit: Duration) -> Result<(), String> {
        let deadline = Instant::now() + limit;
        let endpoints = self.endpoints().join(",");
        loop {
            for (i, m) in self.members.iter_mut().enumerate() {
                let Some(m) = m else { continue };
                if let Ok(Some(status)) = m.try_wait() {
                    let n = i as u32 + 1;
                    return Err(format!(
                        "etcd on node {n} exited ({status}):\n{}",
                        self.log_tail(n)
                    ));
                }
            }
            let healthy = Command::new("ip")
                .args(["netns", "exec", "acpg-n1", "etcdctl"])
                .args(["--endpoints", &endpoints, "--command-timeout", "2s"])
                .args(["endpoint", "health"])
                .env("ETCDCTL_API", "3")
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status()
                .is_ok_and(|s| s.success());
            if healthy {
                return Ok(());
            }
            if Instant::now() > deadline {
                return Err(format!(
                    "etcd not healthy after {limit:?}; node 1's log:\n{}",
                    self.log_tail(1)
                ));
            }
            std::thread::sleep(Duration::from_millis(200));
        }
    }
}

impl Drop for EtcdCluster {
    fn drop(&mut self) {
        for m in self.members.iter_mut().flatten() {
            let _ = m.kill();
            let _ = m.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// The id of the member named `name` in `etcdctl member list -w json`.
fn member_id(list: &str, name: &str) -> Option<u64> {
    let v: serde_json::Value = serde_json::from_str(list).ok()?;
    v.get("members")?
        .as_array()?
        .iter()
        .find(|m| m.get("name").and_then(|n| n.as_str()) == Some(name))?
        .get("ID")?
        .as_u64()
}

/// A number that differs between two clusters started by one process.
fn next_start() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}
