//! The kv service on the sim backend: `acpg-kv serve --sim 3` on loopback
//! ports, driven by `acpg-kv client` processes and by pipelined clients
//! on every replica at once. Nothing is killed but the service itself: at
//! the end (a drop guard, also when a test fails), and with `--data-dir`
//! while puts are in flight, to be served again from its directory.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix_cpg_harness::kv_service::LineClient;

// The library's test helpers; this suite uses the scratch directory.
#[path = "../../tests/support/scratch.rs"]
mod scratch;
use scratch::Scratch;

const KV: &str = env!("CARGO_BIN_EXE_acpg-kv");

/// The service process; killed when dropped.
struct Service {
    child: Child,
    addrs: Vec<String>,
}

impl Drop for Service {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port P of loopback with P, P+1, ... P+n-1 free (as far as binding
/// them a moment ago tells).
fn free_ports(n: u16) -> u16 {
    for _ in 0..50 {
        let Ok(first) = TcpListener::bind("127.0.0.1:0") else {
            continue;
        };
        let Ok(base) = first.local_addr().map(|a| a.port()) else {
            continue;
        };
        if base.checked_add(n).is_none() {
            continue;
        }
        let rest: Vec<_> = (1..n)
            .map(|i| TcpListener::bind(("127.0.0.1", base + i)))
            .collect();
        if rest.iter().all(Result::is_ok) {
            return base;
        }
    }
    panic!("no {n} consecutive free loopback ports");
}

/// Starts `acpg-kv serve GROUP --listen 127.0.0.1:P --sim n` and waits for
/// its `SERVING` lines.
fn serve_sim(n: u16) -> Service {
    serve_sim_with(n, &[])
}

/// [`serve_sim`] with more options (`--safe`, `--data-dir DIR`, ...).
fn serve_sim_with(n: u16, options: &[&str]) -> Service {
    let port = free_ports(n);
    let mut child = Command::new(KV)
        .args(["serve", "kv-test", "--listen", &format!("127.0.0.1:{port}")])
        .args(["--sim", &n.to_string()])
        .args(options)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .spawn()
        .expect("start acpg-kv serve");
    let stdout = child.stdout.take().expect("stdout");
    let mut service = Service {
        child,
        addrs: Vec::new(),
    };
    let mut lines = BufReader::new(stdout).lines();
    while service.addrs.len() < n as usize {
        let line = lines
            .next()
            .expect("acpg-kv serve ended before it served")
            .expect("read its output");
        let addr = line
            .strip_prefix("SERVING ")
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap_or_else(|| panic!("unexpected line {line:?}"));
        service.addrs.push(addr.to_owned());
    }
    service
}

/// `acpg-kv client ADDR WORDS...`: its exit code and its answer.
fn client(addr: &str, words: &str) -> (i32, String) {
    let out = Command::new(KV)
        .arg("client")
        .arg(addr)
        .args(words.split_whitespace())
        .output()
        .expect("run acpg-kv client");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).trim().to_owned(),
    )
}

/// Waits until every replica of `service` is in a primary component.
async fn wait_primary(service: &Service) {
    for addr in &service.addrs {
        let c = LineClient::connect(addr).await.expect("connect");
        let answer = c.call("wait-primary").await.expect("answer");
        assert!(answer.starts_with("PRIMARY"), "{addr}: {answer}");
    }
}

#[tokio::test]
async fn a_put_through_one_replica_is_read_through_another() {
    let service = serve_sim(3);
    wait_primary(&service).await;
    let (a, b, c) = (&service.addrs[0], &service.addrs[1], &service.addrs[2]);

    let (code, answer) = client(a, "put colour deep blue");
    assert_eq!(code, 0, "{answer}");
    assert!(answer.starts_with("OK "), "{answer}");
    let (code, answer) = client(c, "get colour");
    assert_eq!(code, 0);
    assert!(
        answer.starts_with("VALUE ") && answer.ends_with(" deep blue"),
        "{answer}"
    );

    let (code, answer) = client(b, "cas colour red green");
    assert_eq!(code, 0);
    assert!(answer.contains(" fail "), "{answer}");
    let (_, answer) = client(b, "put colour red");
    assert!(answer.starts_with("OK "), "{answer}");
    let (_, answer) = client(c, "cas colour red green");
    assert!(answer.ends_with(" ok"), "{answer}");
    let (_, answer) = client(a, "get colour");
    assert!(answer.ends_with(" green"), "{answer}");

    let (code, answer) = client(b, "del colour");
    assert_eq!(code, 0, "{answer}");
    let (_, answer) = client(a, "get colour");
    assert!(answer.starts_with("NONE "), "{answer}");

    let (code, answer) = client(c, "status");
    assert_eq!(code, 0);
    assert!(
        answer.contains("primary=true") && answer.contains("members=3"),
        "{answer}"
    );
}

#[tokio::test]
async fn pipelined_clients_on_every_replica_at_once_are_all_answered_in_one_order() {
    let service = serve_sim(3);
    wait_primary(&service).await;
    let mut clients = Vec::new();
    for addr in &service.addrs {
        for _ in 0..2 {
            clients.push(LineClient::connect(addr).await.expect("connect"));
        }
    }
    let mut calls = Vec::new();
    for (i, c) in clients.iter().enumerate() {
        for j in 0..100 {
            let c = c.clone();
            calls.push(async move { c.call(&format!("put k{i}-{j} v{j}")).await });
        }
    }
    let answers = futures::future::join_all(calls).await;
    let mut positions: Vec<u64> = answers
        .iter()
        .map(|a| {
            let a = a.as_ref().expect("answered");
            a.strip_prefix("OK ")
                .and_then(|p| p.parse().ok())
                .unwrap_or_else(|| panic!("{a}"))
        })
        .collect();
    positions.sort_unstable();
    positions.dedup();
    assert_eq!(positions.len(), answers.len(), "two puts share a position");

    for (i, addr) in service.addrs.iter().enumerate() {
        let (code, answer) = client(addr, &format!("get k{}-99", 5 - i));
        assert_eq!(code, 0);
        assert!(answer.ends_with(" v99"), "{answer}");
    }
}

#[tokio::test]
async fn the_client_fails_when_nothing_serves_its_address() {
    let port = free_ports(1);
    let (code, _) = client(&format!("127.0.0.1:{port}"), "get k");
    assert_eq!(code, 1);
    let (code, _) = client(&format!("127.0.0.1:{port}"), "frobnicate");
    assert_eq!(code, 1);
}

#[tokio::test]
async fn a_call_on_a_connection_the_server_closed_fails_instead_of_waiting() {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address").to_string();
    let server = tokio::spawn(async move {
        let (socket, _) = listener.accept().await.expect("accept");
        drop(socket);
    });
    let c = LineClient::connect(&addr).await.expect("connect");
    server.await.expect("server task");
    // A guard against a hang, not a timing assertion.
    let guard = std::time::Duration::from_secs(60);
    for _ in 0..2 {
        let answer = tokio::time::timeout(guard, c.call("get k"))
            .await
            .expect("the call ended");
        assert!(answer.is_err(), "{answer:?}");
    }
}

#[tokio::test]
async fn a_connections_pipelined_commands_are_answered_in_the_order_of_their_lines() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let service = serve_sim(3);
    wait_primary(&service).await;
    let mut socket = tokio::net::TcpStream::connect(&service.addrs[1])
        .await
        .expect("connect");
    // Every request in one write, then the client's side closed: each is
    // still answered, in batches, before the server closes its side.
    let requests: String = (0..300).map(|i| format!("#{i} put k{i} v{i}\n")).collect();
    socket
        .write_all(requests.as_bytes())
        .await
        .expect("write the requests");
    socket.shutdown().await.expect("close the writing side");
    let mut answers = String::new();
    socket
        .read_to_string(&mut answers)
        .await
        .expect("read the answers");
    let answered: Vec<(u64, u64)> = answers
        .lines()
        .map(|line| {
            let (tag, pos) = line
                .strip_prefix('#')
                .and_then(|rest| rest.split_once(" OK "))
                .unwrap_or_else(|| panic!("unexpected answer {line:?}"));
            (
                tag.parse().expect("a tag"),
                pos.parse().expect("a position"),
            )
        })
        .collect();
    let tags: Vec<u64> = answered.iter().map(|(tag, _)| *tag).collect();
    assert_eq!(tags, (0..300).collect::<Vec<_>>());
    assert!(
        answered.windows(2).all(|w| w[0].1 < w[1].1),
        "positions follow the lines: {answered:?}"
    );
}

/// One put of the restart test and what came back: an `OK` answer means
/// acknowledged; an error (the connection died with the service) means
/// in flight at the kill, applied or not.
struct Put {
    key: String,
    value: String,
    answer: Result<String, String>,
}

/// `acpg-kv serve --sim 3 --safe --data-dir DIR` takes a stream of puts
/// on every replica (four pipelined callers per replica, each its next put
/// once the last is answered; one caller per replica keeps overwriting one
/// key written before), is SIGKILLed in the middle of it, and is served
/// again on the same directory: every acknowledged put is read back, each
/// put left without an answer either took effect or did not, and an
/// overwritten key holds its last acknowledged value or the one in flight
/// after it.
#[tokio::test]
async fn killed_with_puts_in_flight_the_service_serves_every_acknowledged_put_again_from_its_directory(
) {
    let scratch = Scratch::new("kv-service-restart");
    let dir = scratch.path().display().to_string();
    let durable = ["--safe", "--data-dir", dir.as_str()];
    let mut service = serve_sim_with(3, &durable);
    wait_primary(&service).await;
    let mut first = BTreeMap::new();
    for (r, addr) in service.addrs.iter().enumerate() {
        let (code, answer) = client(addr, &format!("put shared{r} first"));
        assert_eq!(code, 0, "{answer}");
        first.insert(format!("shared{r}"), "first".to_owned());
    }
    // The stream: runs until its connection dies with the service.
    let puts: Arc<Mutex<Vec<Put>>> = Arc::default();
    let acknowledged = Arc::new(AtomicUsize::new(0));
    let mut callers = Vec::new();
    for (r, addr) in service.addrs.iter().enumerate() {
        let c = LineClient::connect(addr).await.expect("connect");
        for w in 0..4 {
            let (c, puts, acknowledged) = (c.clone(), puts.clone(), acknowledged.clone());
            callers.push(tokio::spawn(async move {
                for i in 0.. {
                    let key = match w {
                        0 => format!("shared{r}"),
                        _ => format!("own{r}-{w}-{i}"),
                    };
                    let value = format!("v{r}-{w}-{i}");
                    let answer = c.call(&format!("put {key} {value}")).await;
                    let done = answer.is_err();
                    if answer.as_deref().is_ok_and(|a| a.starts_with("OK ")) {
                        acknowledged.fetch_add(1, Ordering::Relaxed);
                    }
                    puts.lock().expect("puts").push(Put { key, value, answer });
                    if done {
                        break;
                    }
                }
            }));
        }
    }
    let give_up = Instant::now() + Duration::from_secs(60);
    while acknowledged.load(Ordering::Relaxed) < 150 && Instant::now() < give_up {
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // SIGKILL, with twelve puts in flight.
    service.child.kill().expect("kill the service");
    let _ = service.child.wait();
    for caller in callers {
        tokio::time::timeout(Duration::from_secs(60), caller)
            .await
            .expect("a caller ends once the service died")
            .expect("caller task");
    }
    drop(service);
    let puts = std::mem::take(&mut *puts.lock().expect("puts"));
    let acked = puts.iter().filter(|p| p.answer.is_ok()).count();
    assert!(acked >= 150, "only {acked} puts were acknowledged");
    for p in &puts {
        if let Ok(answer) = &p.answer {
            assert!(answer.starts_with("OK "), "put {}: {answer}", p.key);
        }
    }

    // Served again on the same directory.
    let service = serve_sim_with(3, &durable);
    wait_primary(&service).await;
    let mut readers = Vec::new();
    for addr in &service.addrs {
        readers.push(LineClient::connect(addr).await.expect("connect"));
    }
    let get = |n: usize, key: &str| {
        let c = readers[n % readers.len()].clone();
        let line = format!("get {key}");
        async move { c.call(&line).await.expect("an answer") }
    };
    let value_of = |answer: &str| -> Option<String> {
        let rest = answer.strip_prefix("VALUE ")?;
        Some(rest.split_once(' ')?.1.to_owned())
    };
    let (mut applied, mut not_applied) = (0, 0);
    for (n, p) in puts.iter().filter(|p| p.key.starts_with("own")).enumerate() {
        let answer = get(n, &p.key).await;
        let found = value_of(&answer);
        match (&p.answer, found == Some(p.value.clone())) {
            (Ok(_), true) => {}
            (Ok(_), false) => panic!("acknowledged {} = {} lost: {answer}", p.key, p.value),
            (Err(_), true) => applied += 1,
            (Err(_), false) => {
                assert!(answer.starts_with("NONE "), "{}: {answer}", p.key);
                not_applied += 1;
            }
        }
    }
    for (r, key) in first.keys().enumerate() {
        // Its caller wrote it in turn: the last acknowledged value (or the
        // first one), or the one in flight after it.
        let writes: Vec<&Put> = puts.iter().filter(|p| &p.key == key).collect();
        let last_acked = writes
            .iter()
            .rev()
            .find(|p| p.answer.is_ok())
            .map_or("first", |p| p.value.as_str());
        let in_flight = writes.iter().rev().find(|p| p.answer.is_err());
        let found = value_of(&get(r, key).await).unwrap_or_default();
        if in_flight.is_some_and(|p| p.value == found) {
            applied += 1;
        } else {
            assert_eq!(found, last_acked, "{key}: not its last acknowledged value");
            not_applied += in_flight.iter().count();
        }
    }
    assert_eq!(
        applied + not_applied,
        12,
        "every caller had one put in flight"
    );
    println!(
        "{acked} puts acknowledged, all served again; of the 12 in flight at the kill {applied} applied, {not_applied} not"
    );
}
