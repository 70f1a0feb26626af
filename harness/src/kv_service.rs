//! The kv service: replicas of [`KvStore`] serving the line protocol of
//! [`crate::kv_lines`] over TCP, and its client. The `acpg-kv` binary is a
//! thin wrapper around [`main_with`]; the `bench` binary runs the same
//! code for its etcd comparison.
//!
//! ```text
//!  acpg-kv client ──TCP──► serve_tcp ── one task per connection ──► Replica<KvStore>
//!  (LineClient: one task    (accept loop)   (reads, starts, writes:      (total order over CPG)
//!   per connection,                          tags #N, pipelined)
//!   pipelined)
//! ```
//!
//! Rules:
//!
//! 1. One replica serves any number of connections at once; each
//!    connection has its own task, which starts each request as soon as
//!    its line is read, so its requests enter the total order in the
//!    order its lines came, and answers carry the request's `#N` tag.
//! 2. A read (`get`) is answered from this replica's state where a
//!    barrier it multicast comes back in the total order (`Replica::read`,
//!    queued behind the connection's earlier commands), so it sees every
//!    write acknowledged before it was sent, on any replica — reads are
//!    linearizable — and nothing is logged for it. `read KEY` is the
//!    local, possibly stale read.
//! 3. A connection's task reads every line the client sent before it
//!    writes (what came together is queued together, and the replica packs
//!    it into one multicast), and writes every answer that is ready with
//!    one flush, so a burst of answers goes out in one write and a lone
//!    answer at once. The answers to a connection's commands come in the
//!    order of their lines; other requests' (`read`, `status`,
//!    `wait-primary`, `check`, ...) as soon as they are ready. No task or
//!    channel stands between the socket and the replica's handle: a
//!    request and its answer are each one hop from the socket.
//! 4. Nothing a client sends can stop the service: a line that does not
//!    parse is answered `ERR ...`; a connection that fails is dropped and
//!    logged on stderr.
//! 5. With `--data-dir DIR` the replica keeps its state there
//!    ([`ReplicaConfig::data_dir`]; `--sync` says when it reaches the disk,
//!    before the answer): serve again on the same directory after a crash,
//!    or after the whole group was killed, and the state is back.
//! 6. A durable replica writes a snapshot every [`SNAPSHOT_EVERY`]
//!    commands (etcd's default `--snapshot-count`): the snapshot is the
//!    whole state, written while the replica waits, so a large state
//!    snapshotted often stalls every request.
//! 7. The replicas pack what is queued into one multicast, up to
//!    [`DEFAULT_BATCH`] messages ([`ReplicaConfig::batch_messages`];
//!    `--batch N`, 1 sends each alone): every replica of a group must run
//!    a build that reads such batches, which every build of this service
//!    does.
//! 8. `--chunks N` is how many snapshot chunks a replica keeps in flight
//!    while it sends the state to a joiner
//!    ([`ReplicaConfig::chunks_in_flight`]): more shortens the transfer a
//!    little and makes every request behind the chunks wait longer.
//! 9. The replicas compare digests of their states every
//!    [`DIGEST_EVERY`] commands ([`ReplicaConfig::digest_every`];
//!    `--digest-every N`, 0 only on `check`): each check copies the whole
//!    state on the replica's actor and hashes it on a blocking thread: at
//!    the library's default (every 10,000 commands) that was about 15% of
//!    each server's CPU under a load of 100 B puts to 16,000 keys, and with
//!    4 KiB values each check hashes 64 MB.
//! 10. A [`LineClient`] is one task per connection, which owns the socket:
//!     it writes every call queued since it last ran with one write (tagged
//!     in the order the calls came) and hands each answer line to the call
//!     with its tag. A call is one hop to the task and one back; no lock,
//!     no second task.

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::path::PathBuf;

use actix_cpg::kv::KvStore;
use actix_cpg::replicated::SyncPolicy;
use actix_cpg::{Delivery, Replica, ReplicaConfig};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader, BufWriter};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};

use std::task::Poll;

use futures::future::{FutureExt, LocalBoxFuture};
use futures::stream::{FuturesUnordered, StreamExt};

use crate::kv_lines;

/// Which transport the replicas of `serve` run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// `--sim N`: N replicas in this process on the in-process sim
    /// backend, replica `i` (from 0) on the listen address's port + `i`.
    Sim(u32),
    /// `--corosync`: one replica on the corosync daemon of this network
    /// namespace.
    Corosync,
}

/// What `acpg-kv serve` was asked for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServeOptions {
    /// The CPG group.
    pub group: String,
    /// Where the (first) replica listens.
    pub listen: SocketAddr,
    /// When replies leave: agreed by default; `--safe` waits for a
    /// majority of the replicas to apply (and, with a data directory,
    /// sync) a command, `--safe-all` for every replica holding the state
    /// (whichever of the two is given, `--safe-all` wins).
    pub delivery: Delivery,
    /// Only join a group that exists; never found a new history.
    pub join_only: bool,
    /// The transport.
    pub backend: Backend,
    /// Records each replica's stream (with `--sim N`: FILE.1 .. FILE.N).
    pub record: Option<PathBuf>,
    /// Keeps each replica's state in this directory (with `--sim N`:
    /// DIR/1 .. DIR/N): a replica started again on it comes back with it.
    pub data_dir: Option<PathBuf>,
    /// When a durable replica's commands reach the disk.
    pub sync: SyncPolicy,
    /// Most replica messages per multicast (rule 7).
    pub batch: usize,
    /// Multicasts in flight ([`ReplicaConfig::send_window`]).
    pub window: usize,
    /// Snapshot chunks in flight while this replica sends a state
    /// ([`ReplicaConfig::chunks_in_flight`]).
    pub chunks: usize,
    /// Commands between two divergence checks (rule 9; 0: only on demand).
    pub digest_every: u64,
}

/// Commands between two snapshots of a durable replica (rule 6).
pub const SNAPSHOT_EVERY: u64 = 100_000;

/// Commands between two divergence checks unless `--digest-every` says
/// otherwise (rule 9): as many as between two snapshots.
pub const DIGEST_EVERY: u64 = SNAPSHOT_EVERY;

/// Set (to anything) in `serve`'s environment, it prints where requests'
/// time went every 5 s on stderr ([`actix_cpg::probe`]).
pub const PROBE_ENV: &str = "ACPG_PROBE";

/// Replica messages per multicast unless `--batch` says otherwise.
pub const DEFAULT_BATCH: usize = 64;

/// The usage line of `acpg-kv`.
pub const USAGE: &str = "usage: acpg-kv serve GROUP --listen ADDR [--safe | --safe-all] [--join-only] [--sim N | --corosync] [--data-dir DIR] [--sync every|batch|never] [--batch N] [--window N] [--chunks N] [--digest-every N] [--record FILE]\n       acpg-kv client ADDR put K V | get K | del K | cas K OLD NEW | status";

/// Parses the arguments of `serve` (after the word `serve`).
pub fn parse_serve(args: &[String]) -> Result<ServeOptions, String> {
    let mut group = None;
    let mut listen = None;
    let mut delivery = Delivery::Agreed;
    let mut join_only = false;
    let mut backend = None;
    let mut record = None;
    let mut data_dir = None;
    let mut sync = SyncPolicy::default();
    let mut batch = DEFAULT_BATCH;
    let mut window = ReplicaConfig::default().send_window;
    let mut chunks = ReplicaConfig::default().chunks_in_flight;
    let mut digest_every = DIGEST_EVERY;
    let mut args = args.iter();
    while let Some(arg) = args.next() {
        let mut value = |what: &str| {
            args.next()
                .cloned()
                .ok_or_else(|| format!("{arg} takes {what}"))
        };
        match arg.as_str() {
            "--listen" => {
                let v = value("an address")?;
                listen = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|e| format!("--listen {v:?}: {e}"))?,
                );
            }
            "--safe" if delivery == Delivery::Agreed => delivery = Delivery::Safe,
            "--safe" => {}
            "--safe-all" => delivery = Delivery::SafeAll,
            "--join-only" => join_only = true,
            "--sim" => {
                let v = value("a member count")?;
                let n = v
                    .parse::<u32>()
                    .ok()
                    .filter(|n| (1..=16).contains(n))
                    .ok_or_else(|| format!("--sim takes 1 to 16 members, not {v:?}"))?;
                backend = Some(Backend::Sim(n));
            }
            "--corosync" => backend = Some(Backend::Corosync),
            "--record" => record = Some(PathBuf::from(value("a file")?)),
            "--data-dir" => data_dir = Some(PathBuf::from(value("a directory")?)),
            "--sync" => {
                let v = value("every, batch or never")?;
                sync = match v.as_str() {
                    "every" => SyncPolicy::EveryCommand,
                    "batch" => SyncPolicy::Batch,
                    "never" => SyncPolicy::Never,
                    _ => return Err(format!("--sync takes every, batch or never, not {v:?}")),
                };
            }
            "--batch" => batch = count_from_one(arg, value("a message count")?)?,
            "--window" => window = count_from_one(arg, value("a multicast count")?)?,
            "--chunks" => chunks = count_from_one(arg, value("a chunk count")?)?,
            "--digest-every" => {
                let v = value("a command count")?;
                digest_every = v
                    .parse()
                    .map_err(|_| format!("--digest-every takes a count, not {v:?}"))?;
            }
            other if other.starts_with("--") => return Err(format!("unknown option {other:?}")),
            other if group.is_none() => group = Some(other.to_owned()),
            other => return Err(format!("unexpected argument {other:?}")),
        }
    }
    Ok(ServeOptions {
        group: group.ok_or("serve needs a GROUP")?,
        listen: listen.ok_or("serve needs --listen ADDR")?,
        delivery,
        join_only,
        backend: backend.ok_or("serve needs --sim N or --corosync")?,
        record,
        data_dir,
        sync,
        batch,
        window,
        chunks,
        digest_every,
    })
}

/// The value of option `arg`: a count of at least one.
fn count_from_one(arg: &str, v: String) -> Result<usize, String> {
    v.parse::<usize>()
        .ok()
        .filter(|n| *n >= 1)
        .ok_or_else(|| format!("{arg} takes a count from 1, not {v:?}"))
}

/// The request line of a `client` invocation (after `client ADDR`).
pub fn client_line(words: &[String]) -> Result<String, String> {
    let w: Vec<&str> = words.iter().map(String::as_str).collect();
    match w.as_slice() {
        ["put", key, value @ ..] if !value.is_empty() => {
            Ok(format!("put {key} {}", value.join(" ")))
        }
        ["get", key] => Ok(format!("get {key}")),
        ["del", key] => Ok(format!("del {key}")),
        ["cas", key, old, new] => Ok(format!("cas {key} {old} {new}")),
        ["status"] => Ok("status".into()),
        _ => Err(format!("cannot make a request of {words:?}")),
    }
}

/// The replica configuration `serve` runs with; `data_dir` is this
/// replica's directory, if durable.
pub fn replica_config(
    o: &ServeOptions,
    record_to: Option<PathBuf>,
    data_dir: Option<PathBuf>,
) -> ReplicaConfig {
    ReplicaConfig {
        delivery: o.delivery,
        found_group: !o.join_only,
        record_to,
        data_dir,
        sync: o.sync,
        batch_messages: o.batch,
        snapshot_every: SNAPSHOT_EVERY,
        send_window: o.window,
        chunks_in_flight: o.chunks,
        digest_every: o.digest_every,
        ..ReplicaConfig::default()
    }
}

/// Serves the line protocol of `replica` to every client of `listener`,
/// until the listener fails. Must run inside an actix system.
pub async fn serve_tcp(replica: Replica<KvStore>, listener: TcpListener) -> std::io::Result<()> {
    loop {
        let (socket, _peer) = listener.accept().await?;
        let _ = socket.set_nodelay(true);
        actix::spawn(serve_connection(replica.clone(), socket));
    }
}

/// Serves one connection in one task (rule 3): each request line read is
/// started at once (a command queued in the replica), and whatever
/// answers are ready are written together, with one flush. Ends when the
/// client closed its side and every answer is written, or on an error.
async fn serve_connection(replica: Replica<KvStore>, socket: TcpStream) {
    let (read, write) = socket.into_split();
    let mut read = BufReader::new(read);
    // One buffer for every line of the connection, not a string each.
    let mut line = Vec::new();
    let mut write = BufWriter::new(write);
    let mut answers = Answers::default();
    let mut stamps = Stamps::on();
    let mut reading = true;
    let mut ready = Vec::new();
    while reading || !answers.is_empty() {
        tokio::select! {
            // Lines first: what the client sent together is queued
            // together, so the replica packs it into one multicast.
            biased;
            // Cancel-safe: a line cut short stays in `line`, and the
            // next call goes on with it.
            got = read.read_until(b'\n', &mut line), if reading => {
                if let Err(e) = got {
                    eprintln!("acpg-kv: dropped a client connection: {e}");
                    return;
                }
                // Without "\n" the stream ended: this is its last line.
                let complete = line.last() == Some(&b'\n');
                if !line.is_empty() {
                    // Without its "\n" or "\r\n", as `lines()` gives it.
                    let bytes = match line.strip_suffix(b"\n") {
                        Some(l) => l.strip_suffix(b"\r").unwrap_or(l),
                        None => &line,
                    };
                    let Ok(text) = std::str::from_utf8(bytes) else {
                        eprintln!("acpg-kv: dropped a client connection: a line is not UTF-8");
                        return;
                    };
                    stamps.read(text);
                    let (tag, body) = kv_lines::split_tag(text);
                    if let Some(started) = kv_lines::start_request(&replica, body) {
                        answers.push(tag, started);
                    }
                    line.clear();
                }
                reading = complete;
            },
            Some(first) = answers.next() => {
                ready.push(first);
                while let Some(Some(more)) = answers.next().now_or_never() {
                    ready.push(more);
                }
                for (tag, answer) in &ready {
                    if write.write_all(tag.as_bytes()).await.is_err()
                        || write.write_all(answer.as_bytes()).await.is_err()
                        || write.write_all(b"\n").await.is_err()
                    {
                        return;
                    }
                }
                if write.flush().await.is_err() {
                    return;
                }
                for (tag, _) in ready.drain(..) {
                    stamps.written(&tag);
                }
            }
        }
    }
}

/// The answers one connection waits for, each with its line's tag (rule
/// 3): the commands' in the order of their lines, the others as they
/// come.
///
/// A connection's commands are applied in the order of their lines, so
/// their answers come in that order too: only the oldest is polled (its
/// waker stands for all of them), and when it is answered the next is
/// polled at once, which finds its answer there if it came meanwhile.
#[derive(Default)]
pub struct Answers {
    commands: VecDeque<(String, LocalBoxFuture<'static, String>)>,
    others: FuturesUnordered<LocalBoxFuture<'static, (String, String)>>,
}

impl Answers {
    /// Waits for the answer of the request started as `started`, with
    /// the line's `tag` (`#N ` or empty, as [`kv_lines::split_tag`] gives
    /// it).
    pub fn push(&mut self, tag: &str, started: kv_lines::Started) {
        let tag = tag.to_owned();
        match started {
            kv_lines::Started::Command(answer) => self.commands.push_back((tag, answer)),
            kv_lines::Started::Other(answer) => self
                .others
                .push(Box::pin(async move { (tag, answer.await) })),
        }
    }

    /// Whether no answer is awaited.
    pub fn is_empty(&self) -> bool {
        self.commands.is_empty() && self.others.is_empty()
    }

    /// The next answer ready, as its tag and its line: a command's if one
    /// is, else another's; `None` when none is awaited.
    pub async fn next(&mut self) -> Option<(String, String)> {
        if self.is_empty() {
            return None;
        }
        futures::future::poll_fn(|cx| {
            if let Some((_, oldest)) = self.commands.front_mut() {
                if let Poll::Ready(answer) = oldest.as_mut().poll(cx) {
                    if let Some((tag, _)) = self.commands.pop_front() {
                        return Poll::Ready(Some((tag, answer)));
                    }
                }
            }
            match self.others.poll_next_unpin(cx) {
                Poll::Ready(Some(tagged)) => Poll::Ready(Some(tagged)),
                _ if self.is_empty() => Poll::Ready(None),
                _ => Poll::Pending,
            }
        })
        .await
    }
}

/// When each tagged request of one connection was read, while
/// [`actix_cpg::probe`] is on: its answer's write records the time
/// between (`server.read→written`).
#[derive(Default)]
struct Stamps(Option<HashMap<String, std::time::Instant>>);

impl Stamps {
    fn on() -> Stamps {
        Stamps(actix_cpg::probe::enabled().then(HashMap::new))
    }

    fn tag(line: &str) -> Option<&str> {
        line.strip_prefix('#')?.split(' ').next()
    }

    fn read(&mut self, line: &str) {
        if let (Some(map), Some(tag)) = (&mut self.0, Self::tag(line)) {
            map.insert(tag.to_owned(), std::time::Instant::now());
        }
    }

    fn written(&mut self, line: &str) {
        if let (Some(map), Some(tag)) = (&mut self.0, Self::tag(line)) {
            if let Some(at) = map.remove(tag) {
                actix_cpg::probe::record("server.read→written", at.elapsed());
            }
        }
    }
}

/// Runs `acpg-kv serve`: starts the replica(s), prints `SERVING ADDR
/// MEMBER` on stdout for each once it listens, and serves until killed.
pub async fn serve(o: ServeOptions) -> Result<(), String> {
    let group = actix_cpg::GroupName::new(o.group.clone()).map_err(|e| e.to_string())?;
    // On before any replica or connection starts: every request counts.
    if std::env::var_os(PROBE_ENV).is_some() {
        actix_cpg::probe::enable();
        actix::spawn(async {
            loop {
                tokio::time::sleep(std::time::Duration::from_secs(5)).await;
                let report = actix_cpg::probe::report();
                if !report.is_empty() {
                    eprint!("PROBE\n{report}");
                }
            }
        });
    }
    let mut servers = Vec::new();
    // The sim cluster lives as long as the service.
    let mut _sim = None;
    match o.backend {
        Backend::Sim(n) => {
            use actix_cpg::transport::sim::SimCluster;
            use actix_cpg::{NodeId, Transport};
            let cluster = SimCluster::new(n);
            for i in 0..n {
                let conn = cluster
                    .process(NodeId(i + 1))
                    .map_err(|e| e.to_string())?
                    .join(&group)
                    .map_err(|e| e.to_string())?;
                let record = o
                    .record
                    .as_ref()
                    .map(|f| PathBuf::from(format!("{}.{}", f.display(), i + 1)));
                let dir = o.data_dir.as_ref().map(|d| d.join((i + 1).to_string()));
                let replica = Replica::<KvStore>::start(conn, replica_config(&o, record, dir))
                    .await
                    .map_err(|e| e.to_string())?;
                let mut addr = o.listen;
                addr.set_port(o.listen.port() + i as u16);
                servers.push((replica, addr));
            }
            _sim = Some(cluster);
        }
        Backend::Corosync => servers.push((start_corosync(&o, &group).await?, o.listen)),
    }
    let mut tasks = Vec::new();
    for (replica, addr) in servers {
        let listener = TcpListener::bind(addr)
            .await
            .map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        let bound = listener.local_addr().map_err(|e| e.to_string())?;
        println!("SERVING {bound} {}", replica.local());
        tasks.push(actix::spawn(serve_tcp(replica, listener)));
    }
    for task in tasks {
        match task.await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(format!("listener failed: {e}")),
            Err(e) => return Err(format!("listener task failed: {e}")),
        }
    }
    Ok(())
}

#[cfg(feature = "corosync")]
async fn start_corosync(
    o: &ServeOptions,
    group: &actix_cpg::GroupName,
) -> Result<Replica<KvStore>, String> {
    use actix_cpg::transport::corosync::Corosync;
    use actix_cpg::Transport;
    let conn = Corosync::new().join(group).map_err(|e| e.to_string())?;
    Replica::<KvStore>::start(
        conn,
        replica_config(o, o.record.clone(), o.data_dir.clone()),
    )
    .await
    .map_err(|e| e.to_string())
}

#[cfg(not(feature = "corosync"))]
async fn start_corosync(
    _o: &ServeOptions,
    _group: &actix_cpg::GroupName,
) -> Result<Replica<KvStore>, String> {
    Err("--corosync needs a build with the `corosync` feature".into())
}

/// One call on its way to its connection's task: the request line
/// (without a tag) and where its answer goes.
struct Call {
    line: String,
    answer: oneshot::Sender<String>,
}

/// A pipelined client of the line protocol: any number of requests in
/// flight on one connection, matched to their answers by tag. Runs on any
/// tokio runtime.
///
/// One task owns the connection (rule 10): it tags and writes every call
/// queued since it last ran with one write, and hands each answer to its
/// caller, so a call costs one hop to the task and one back, with no lock.
#[derive(Clone)]
pub struct LineClient {
    calls: mpsc::UnboundedSender<Call>,
}

impl LineClient {
    /// Connects to a server of the line protocol.
    pub async fn connect(addr: &str) -> std::io::Result<LineClient> {
        let socket = TcpStream::connect(addr).await?;
        socket.set_nodelay(true)?;
        let (calls, queued) = mpsc::unbounded_channel();
        tokio::spawn(run_client(socket, queued));
        Ok(LineClient { calls })
    }

    /// Sends one request line and waits for its answer (without the tag).
    pub async fn call(&self, line: &str) -> Result<String, String> {
        let (answer, answered) = oneshot::channel();
        self.calls
            .send(Call {
                line: line.to_owned(),
                answer,
            })
            .map_err(|_| "connection closed".to_owned())?;
        // The task dropped the call's sender: the connection ended.
        answered.await.map_err(|_| "connection closed".to_owned())
    }
}

/// The task of one client connection (rule 10): writes the calls of
/// `queued` tagged `#1`, `#2`, ... and answers each from the line that
/// carries its tag. Ends when the connection fails or closes, or when
/// every [`LineClient`] is gone and nothing is awaited; then every call
/// still waiting, or queued later, fails.
async fn run_client(socket: TcpStream, mut queued: mpsc::UnboundedReceiver<Call>) {
    let (read, mut write) = socket.into_split();
    let mut answers = BufReader::new(read).lines();
    let mut waiting: HashMap<u64, oneshot::Sender<String>> = HashMap::new();
    let mut out: Vec<u8> = Vec::new();
    let mut next_tag = 1u64;
    let mut open = true;
    while open || !waiting.is_empty() {
        tokio::select! {
            // Answers first: whoever gets one sends its next request, and
            // those then go out together.
            biased;
            line = answers.next_line() => match line {
                Ok(Some(line)) => {
                    let Some((tag, body)) = line
                        .strip_prefix('#')
                        .and_then(|rest| rest.split_once(' '))
                        .and_then(|(tag, body)| Some((tag.parse::<u64>().ok()?, body)))
                    else {
                        continue;
                    };
                    if let Some(waiter) = waiting.remove(&tag) {
                        let _ = waiter.send(body.to_owned());
                    }
                }
                Ok(None) | Err(_) => return,
            },
            call = queued.recv(), if open => {
                let Some(call) = call else {
                    open = false;
                    continue;
                };
                let mut call = Some(call);
                while let Some(Call { line, answer }) = call {
                    use std::io::Write as _;
                    // A Vec takes any write.
                    let _ = writeln!(out, "#{next_tag} {line}");
                    waiting.insert(next_tag, answer);
                    next_tag += 1;
                    call = queued.try_recv().ok();
                }
                // Most bursts fit the socket's buffer: written here, at once.
                match write.try_write(&out) {
                    Ok(n) => {
                        out.drain(..n);
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
                    Err(_) => return,
                }
            },
            written = write.write(&out), if !out.is_empty() => match written {
                Ok(n) if n > 0 => {
                    out.drain(..n);
                }
                _ => return,
            },
        }
    }
}

/// Runs `acpg-kv client ADDR WORDS...`: the answer line, or why there is
/// none. The caller exits 1 on an `ERR` answer.
pub async fn client(addr: &str, words: &[String]) -> Result<String, String> {
    let line = client_line(words)?;
    let client = LineClient::connect(addr)
        .await
        .map_err(|e| format!("cannot connect to {addr}: {e}"))?;
    client.call(&line).await
}

/// The whole `acpg-kv` command line (without the program name); returns
/// the process's exit code.
pub fn main_with(args: &[String]) -> i32 {
    match args.first().map(String::as_str) {
        Some("serve") => {
            let o = match parse_serve(&args[1..]) {
                Ok(o) => o,
                Err(e) => {
                    eprintln!("acpg-kv: {e}\n{USAGE}");
                    return 2;
                }
            };
            crate::log_to_stderr();
            match actix::System::new().block_on(serve(o)) {
                Ok(()) => 0,
                Err(e) => {
                    println!("ERROR {e}");
                    eprintln!("acpg-kv: {e}");
                    1
                }
            }
        }
        Some("client") if args.len() >= 3 => {
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(r) => r,
                Err(e) => {
                    eprintln!("acpg-kv: {e}");
                    return 1;
                }
            };
            match runtime.block_on(client(&args[1], &args[2..])) {
                Ok(answer) => {
                    println!("{answer}");
                    i32::from(answer.starts_with("ERR"))
                }
                Err(e) => {
                    eprintln!("acpg-kv: {e}");
                    1
                }
            }
        }
        _ => {
            eprintln!("{USAGE}");
            2
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn words(s: &str) -> Vec<String> {
        s.split_whitespace().map(str::to_owned).collect()
    }

    #[test]
    fn serve_arguments_name_group_address_and_backend() {
        let o = parse_serve(&words("g --listen 127.0.0.1:7000 --sim 3 --safe")).expect("parses");
        assert_eq!(o.group, "g");
        assert_eq!(o.listen.port(), 7000);
        assert_eq!(o.backend, Backend::Sim(3));
        assert!(o.delivery == Delivery::Safe && !o.join_only);
        assert!(parse_serve(&words("g --listen 127.0.0.1:7000")).is_err());
        assert!(parse_serve(&words("g --sim 3")).is_err());
        assert!(parse_serve(&words("g --listen nowhere --sim 3")).is_err());
        assert!(parse_serve(&words("g --listen 127.0.0.1:1 --sim 0")).is_err());
    }

    #[test]
    fn safe_waits_for_a_majority_and_safe_all_for_every_holder() {
        let base = "g --listen 127.0.0.1:7000 --sim 3";
        let delivery = |extra: &str| {
            let o = parse_serve(&words(&format!("{base} {extra}"))).expect("parses");
            super::replica_config(&o, None, None).delivery
        };
        assert_eq!(delivery(""), Delivery::Agreed);
        assert_eq!(delivery("--safe"), Delivery::Safe);
        assert_eq!(delivery("--safe-all"), Delivery::SafeAll);
        assert_eq!(delivery("--safe-all --safe"), Delivery::SafeAll);
        assert_eq!(delivery("--safe --safe-all"), Delivery::SafeAll);
    }

    #[test]
    fn divergence_checks_come_every_snapshots_worth_of_commands_unless_asked() {
        let base = "g --listen 127.0.0.1:7000 --corosync";
        let every = |extra: &str| {
            let o = parse_serve(&words(&format!("{base} {extra}"))).expect("parses");
            replica_config(&o, None, None).digest_every
        };
        assert_eq!(every(""), SNAPSHOT_EVERY);
        assert_eq!(every("--digest-every 500"), 500);
        assert_eq!(every("--digest-every 0"), 0);
        assert!(parse_serve(&words(&format!("{base} --digest-every -1"))).is_err());
        assert!(parse_serve(&words(&format!("{base} --digest-every"))).is_err());
    }

    #[test]
    fn the_chunk_window_defaults_to_the_librarys_and_is_at_least_one() {
        let base = "g --listen 127.0.0.1:7000 --corosync";
        let o = parse_serve(&words(base)).expect("parses");
        assert_eq!(o.chunks, ReplicaConfig::default().chunks_in_flight);
        let o = parse_serve(&words(&format!("{base} --chunks 4"))).expect("parses");
        assert_eq!(replica_config(&o, None, None).chunks_in_flight, 4);
        assert!(parse_serve(&words(&format!("{base} --chunks 0"))).is_err());
        assert!(parse_serve(&words(&format!("{base} --chunks"))).is_err());
    }

    fn ready(line: &str) -> LocalBoxFuture<'static, String> {
        let line = line.to_owned();
        Box::pin(async move { line })
    }

    fn later(rx: oneshot::Receiver<String>) -> LocalBoxFuture<'static, String> {
        Box::pin(async move { rx.await.unwrap_or_default() })
    }

    #[test]
    fn commands_are_answered_in_the_order_of_their_lines_and_other_requests_as_they_come() {
        use kv_lines::Started::{Command, Other};
        let mut answers = Answers::default();
        let (first, first_rx) = oneshot::channel();
        let (second, second_rx) = oneshot::channel();
        answers.push("#1 ", Command(later(first_rx)));
        answers.push("#2 ", Command(later(second_rx)));
        answers.push("#3 ", Other(ready("STATUS")));
        answers.push("", Command(ready("OK 9")));
        let mut next = || {
            answers
                .next()
                .now_or_never()
                .map(|a| a.map(|(tag, line)| tag + &line))
        };
        // Only the status is ready; the commands wait for the first.
        assert_eq!(next(), Some(Some("#3 STATUS".to_owned())));
        assert_eq!(next(), None);
        second.send("OK 8".into()).expect("waiting");
        assert_eq!(next(), None, "the second command waits for the first");
        first.send("OK 7".into()).expect("waiting");
        assert_eq!(next(), Some(Some("#1 OK 7".to_owned())));
        assert_eq!(next(), Some(Some("#2 OK 8".to_owned())));
        assert_eq!(next(), Some(Some("OK 9".to_owned())));
        assert_eq!(next(), Some(None));
        assert!(answers.is_empty());
    }

    #[test]
    fn client_words_become_one_request_line() {
        assert_eq!(
            client_line(&words("put k hello world")),
            Ok("put k hello world".into())
        );
        assert_eq!(client_line(&words("cas k - v")), Ok("cas k - v".into()));
        assert_eq!(client_line(&words("status")), Ok("status".into()));
        assert!(client_line(&words("put k")).is_err());
        assert!(client_line(&words("get")).is_err());
    }
}
