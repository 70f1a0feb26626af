//! The line protocol of the kv store (`actix_cpg::kv`): what the
//! `rsm-agent` binary serves to the real-cluster tests
//! (`tests/cluster_replicated.rs`).
//!
//! [`serve_lines`] drives a [`Replica`] of a [`KvStore`] from channels (the
//! kv service's connections call [`start_request`] themselves, one hop
//! from their socket). Each line of the
//! protocol is one request; a request may start with a tag `#N` that the
//! response repeats (so a client can pipeline and match answers), and the
//! response names the command's position in the group's total order:
//!
//! ```text
//!  put KEY VALUE...        OK POS                 (value: rest of the line)
//!  get KEY                 VALUE POS VALUE  |  NONE POS
//!  del KEY                 OK POS  |  NONE POS    (whether it existed)
//!  cas KEY OLD NEW         CAS POS ok  |  CAS POS fail CURRENT
//!                          (OLD, NEW, CURRENT: a word, or - for absent)
//!  fill PREFIX COUNT SIZE  FILLED POS COUNT       (COUNT keys of SIZE bytes)
//!  read KEY                LOCAL VALUE  |  LOCAL -   (this replica, no order)
//!  status                  STATUS primary=B epoch=E members=N applied=A holding=B version=V
//!  refused                 REFUSED not_member=N epoch=N inconsistent=N chunk=N stale=N overflow=N
//!                          (protocol messages this replica refused, by cause)
//!  digest                  DIGEST APPLIED KEYS HASH
//!  check                   CHECKED APPLIED N  |  DIVERGED APPLIED MEMBERS FROM
//!                          (a divergence check of the replicas' states: N
//!                          digests agree after command APPLIED, or these
//!                          members, comma-separated, differ and FROM, or -,
//!                          sends them its state)
//!  wait-primary            PRIMARY EPOCH
//!  show                    SHOW {inspect() as JSON}   (see `crate::observe`)
//!  any failed request      ERR REASON             (not-primary, uncertain, ...)
//! ```
//!
//! `cas` is a command like `put`: it takes its place in the total order.
//! `get` is linearizable without being one: the replica reads its state
//! where a barrier of its own comes back in the total order
//! ([`Replica::read`]; POS is how many commands the state read had
//! applied), and only in a group an older build holds below
//! [`actix_cpg::replicated::READ_VERSION`] is it a command. `read` is a
//! local, possibly stale, read.

use std::rc::Rc;

use actix_cpg::kv::{KvCommand, KvResponse, KvStore};
use actix_cpg::{Replica, ReplicaError};
use futures::future::LocalBoxFuture;
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// One parsed line of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A command for the total order.
    Command(KvCommand),
    /// `get KEY`: a linearizable read, at a barrier.
    Get(String),
    /// `read KEY`: this replica's value, without ordering.
    LocalRead(String),
    /// `status`.
    Status,
    /// `refused`.
    Refused,
    /// `digest`.
    Digest,
    /// `check`.
    Check,
    /// `wait-primary`.
    WaitPrimary,
    /// `show`.
    Show,
}

fn word_or_absent(w: &str) -> Option<String> {
    (w != "-").then(|| w.to_owned())
}

/// Parses one line (without its tag).
pub fn parse_request(line: &str) -> Result<Request, String> {
    let line = line.trim();
    let (verb, rest) = line.split_once(' ').unwrap_or((line, ""));
    // A put's value is the rest of the line: only its key is a word (the
    // value may be kilobytes, not worth splitting). The commonest line:
    // parsed without a list of its words.
    if verb == "put" {
        let rest = rest.trim_start();
        let Some(key) = rest.split_whitespace().next() else {
            return Err(format!("cannot parse {line:?}"));
        };
        return Ok(Request::Command(KvCommand::Put {
            key: key.to_owned(),
            value: rest[key.len()..].trim_start().to_owned(),
        }));
    }
    let words: Vec<&str> = rest.split_whitespace().collect();
    Ok(match (verb, words.as_slice()) {
        ("get", [key]) => Request::Get((*key).to_owned()),
        ("del", [key]) => Request::Command(KvCommand::Delete {
            key: (*key).to_owned(),
        }),
        ("cas", [key, old, new]) => Request::Command(KvCommand::Cas {
            key: (*key).to_owned(),
            expected: word_or_absent(old),
            new: word_or_absent(new),
        }),
        ("fill", [prefix, count, size]) => Request::Command(KvCommand::Fill {
            prefix: (*prefix).to_owned(),
            count: count.parse().map_err(|_| format!("bad count {count:?}"))?,
            size: size.parse().map_err(|_| format!("bad size {size:?}"))?,
        }),
        ("read", [key]) => Request::LocalRead((*key).to_owned()),
        ("status", []) => Request::Status,
        ("refused", []) => Request::Refused,
        ("digest", []) => Request::Digest,
        ("check", []) => Request::Check,
        ("wait-primary", []) => Request::WaitPrimary,
        ("show", []) => Request::Show,
        _ => return Err(format!("cannot parse {line:?}")),
    })
}

/// The response line for a command's outcome at position `pos`.
pub fn format_response(response: &KvResponse, pos: u64) -> String {
    match response {
        KvResponse::Previous(Some(_)) => format!("OK {pos}"),
        KvResponse::Previous(None) => format!("OK {pos}"),
        KvResponse::Value(Some(v)) => format!("VALUE {pos} {v}"),
        KvResponse::Value(None) => format!("NONE {pos}"),
        KvResponse::Cas {
            swapped: true,
            current: _,
        } => format!("CAS {pos} ok"),
        KvResponse::Cas {
            swapped: false,
            current,
        } => format!("CAS {pos} fail {}", current.as_deref().unwrap_or("-")),
        KvResponse::Filled(n) => format!("FILLED {pos} {n}"),
    }
}

/// The error line for a failed request.
pub fn format_error(error: &ReplicaError) -> String {
    let reason = match error {
        ReplicaError::NotPrimary => "not-primary".to_owned(),
        ReplicaError::Uncertain => "uncertain".to_owned(),
        ReplicaError::NotMember => "not-member".to_owned(),
        ReplicaError::Overloaded => "overloaded".to_owned(),
        ReplicaError::Closed => "closed".to_owned(),
        ReplicaError::Codec(e) => format!("codec {e}"),
        ReplicaError::Transport(e) => format!("transport {e}"),
        // A kind added later: its words, on one line.
        other => other.to_string().replace(char::is_whitespace, "-"),
    };
    format!("ERR {reason}")
}

/// The line for the next divergence check to complete on `events`.
async fn check_outcome(
    events: &mut tokio::sync::broadcast::Receiver<actix_cpg::replicated::ReplicaEvent>,
) -> String {
    use actix_cpg::replicated::ReplicaEvent;
    let outcome = async {
        loop {
            match events.recv().await {
                Ok(ReplicaEvent::Checked { at, compared }) => {
                    return format!("CHECKED {} {compared}", at.applied)
                }
                Ok(ReplicaEvent::Diverged {
                    at,
                    members,
                    resync_from,
                }) => {
                    let members: Vec<String> = members.iter().map(|m| m.to_string()).collect();
                    let from = resync_from.map_or_else(|| "-".to_owned(), |m| m.to_string());
                    return format!("DIVERGED {} {} {from}", at.applied, members.join(","));
                }
                Ok(_) | Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {}
                Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                    return "ERR closed".to_owned()
                }
            }
        }
    };
    // A view change closes a check undecided: then nothing comes.
    tokio::time::timeout(std::time::Duration::from_secs(10), outcome)
        .await
        .unwrap_or_else(|_| "ERR no-check-completed".to_owned())
}

/// What one request line set going: its answer (without the tag), to
/// come.
pub enum Started {
    /// A command, queued in the replica when the line was started: the
    /// answers of one connection's commands come in the order of their
    /// lines (the replica applies them in that order).
    Command(LocalBoxFuture<'static, String>),
    /// Any other request (a local read, a status, a check, ...): its
    /// answer may come before or after those of earlier lines.
    Other(LocalBoxFuture<'static, String>),
}

/// Starts the request `body` (a line without its tag): a command is queued
/// in `replica` before this returns, so commands started one after the
/// other enter the total order in that order. `None` for an empty line
/// (no answer).
pub fn start_request(replica: &Replica<KvStore>, body: &str) -> Option<Started> {
    if body.trim().is_empty() {
        return None;
    }
    let request = match parse_request(body) {
        Err(e) => {
            let line = format!("ERR {e}");
            return Some(Started::Other(Box::pin(async move { line })));
        }
        Ok(request) => request,
    };
    Some(match request {
        Request::Command(cmd) => {
            let asked = std::time::Instant::now();
            let executed = replica.execute_traced(cmd);
            Started::Command(Box::pin(async move {
                let executed = executed.await;
                actix_cpg::probe::record("server.execute→answer", asked.elapsed());
                match executed {
                    Ok(e) => format_response(&e.response, e.state.applied),
                    Err(e) => format_error(&e),
                }
            }))
        }
        // In line order with the commands: a barrier goes out behind the
        // commands queued before it.
        Request::Get(key) => {
            let replica = replica.clone();
            let wanted = key.clone();
            let read = replica.read_traced(move |s: &KvStore| s.get(&wanted).map(Into::into));
            Started::Command(Box::pin(async move {
                let (value, pos) = match read.await {
                    Ok(r) => (r.response, r.state.applied),
                    // An older build holds the group back: as a command.
                    Err(ReplicaError::ReadsUnsupported { .. }) => {
                        match replica.execute_traced(KvCommand::Get { key }).await {
                            Ok(e) => return format_response(&e.response, e.state.applied),
                            Err(e) => return format_error(&e),
                        }
                    }
                    Err(e) => return format_error(&e),
                };
                format_response(&KvResponse::Value(value), pos)
            }))
        }
        Request::LocalRead(key) => {
            let replica = replica.clone();
            Started::Other(Box::pin(async move {
                let value = replica
                    .query(move |s: &KvStore| s.get(&key).map(str::to_owned))
                    .await;
                match value {
                    Ok(v) => format!("LOCAL {}", v.unwrap_or_else(|| "-".into())),
                    Err(e) => format_error(&e),
                }
            }))
        }
        Request::Show => {
            let replica = replica.clone();
            Started::Other(Box::pin(async move {
                crate::observe::replica_line(&replica).await
            }))
        }
        Request::Status => {
            let s = replica.status();
            let line = format!(
                "STATUS primary={} epoch={} members={} applied={} holding={} version={}",
                s.primary,
                s.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
                s.members.len(),
                s.state.applied,
                s.holding,
                s.protocol_version
                    .map_or_else(|| "-".into(), |v| v.to_string())
            );
            Started::Other(Box::pin(async move { line }))
        }
        Request::Refused => {
            let r = replica.status().refused;
            let line = format!(
                "REFUSED not_member={} epoch={} inconsistent={} chunk={} stale={} overflow={}",
                r.not_member, r.epoch, r.inconsistent, r.chunk, r.stale, r.overflow
            );
            Started::Other(Box::pin(async move { line }))
        }
        Request::Digest => {
            let replica = replica.clone();
            Started::Other(Box::pin(async move {
                let digest = replica.query(|s: &KvStore| (s.len(), s.digest())).await;
                let applied = replica.status().state.applied;
                match digest {
                    Ok((keys, hash)) => format!("DIGEST {applied} {keys} {hash:016x}"),
                    Err(e) => format_error(&e),
                }
            }))
        }
        Request::Check => {
            // Subscribed before asking: the outcome cannot be missed.
            let mut events = replica.subscribe();
            let replica = replica.clone();
            Started::Other(Box::pin(async move {
                match replica.check().await {
                    Err(e) => format_error(&e),
                    Ok(()) => check_outcome(&mut events).await,
                }
            }))
        }
        Request::WaitPrimary => {
            let replica = replica.clone();
            Started::Other(Box::pin(async move {
                match replica.wait_primary().await {
                    Ok(epoch) => format!("PRIMARY {epoch}"),
                    Err(e) => format_error(&e),
                }
            }))
        }
    })
}

/// Splits a line into its tag (`#N `, with its space, or empty) and its
/// request. A line that is only a tag (`#N`) has no request, so it has no
/// answer either ([`start_request`] gives `None`).
pub fn split_tag(line: &str) -> (&str, &str) {
    match line.strip_prefix('#') {
        Some(rest) => match rest.find(' ') {
            Some(at) => (&line[..at + 2], &rest[at + 1..]),
            None => (line, ""),
        },
        None => ("", line),
    }
}

/// Serves the line protocol: one request per input line, one response per
/// request on `output` (tagged like the request). Requests are queued in
/// line order, so pipelined commands enter the total order in that order;
/// responses may come out of order (use tags). Ends when `input` closes.
/// Must run inside an actix system.
pub async fn serve_lines(
    replica: Replica<KvStore>,
    mut input: UnboundedReceiver<String>,
    output: UnboundedSender<String>,
) {
    let output = Rc::new(output);
    while let Some(line) = input.recv().await {
        let (tag, body) = split_tag(&line);
        let tag = tag.to_owned();
        let answer = match start_request(&replica, body) {
            Some(Started::Command(answer) | Started::Other(answer)) => answer,
            None => continue,
        };
        let output = output.clone();
        actix::spawn(async move {
            let _ = output.send(format!("{tag}{}", answer.await));
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tag_keeps_its_space_and_a_bare_tag_has_no_request() {
        assert_eq!(split_tag("#5 put k v"), ("#5 ", "put k v"));
        assert_eq!(split_tag("#5"), ("#5", ""));
        assert_eq!(split_tag("#5 "), ("#5 ", ""));
        assert_eq!(split_tag("get k"), ("", "get k"));
    }

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(
            parse_request("put k hello world"),
            Ok(Request::Command(KvCommand::Put {
                key: "k".into(),
                value: "hello world".into()
            }))
        );
        assert_eq!(
            parse_request("cas k - v2"),
            Ok(Request::Command(KvCommand::Cas {
                key: "k".into(),
                expected: None,
                new: Some("v2".into())
            }))
        );
        assert_eq!(parse_request("get k"), Ok(Request::Get("k".into())));
        assert!(parse_request("get").is_err());
        assert!(parse_request("fill p x 3").is_err());
    }

    #[test]
    fn responses_name_their_position() {
        assert_eq!(format_response(&KvResponse::Value(None), 4), "NONE 4");
        assert_eq!(
            format_response(
                &KvResponse::Cas {
                    swapped: false,
                    current: None
                },
                9
            ),
            "CAS 9 fail -"
        );
        assert_eq!(format_error(&ReplicaError::NotPrimary), "ERR not-primary");
    }
}
