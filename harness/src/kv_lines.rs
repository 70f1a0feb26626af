//! The line protocol of the kv store (`actix_cpg::kv`): what the
//! `rsm-agent` binary serves to the real-cluster tests
//! (`tests/cluster_replicated.rs`).
//!
//! [`serve_lines`] drives a [`Replica`] of a [`KvStore`]. Each line of the
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
//! `get` and `cas` are commands like `put`: they take their place in the
//! total order, so reads are linearizable; `read` is a local, possibly
//! stale, read.

use std::rc::Rc;

use actix_cpg::kv::{KvCommand, KvResponse, KvStore};
use actix_cpg::{Replica, ReplicaError};
use tokio::sync::mpsc::{UnboundedReceiver, UnboundedSender};

/// One parsed line of the protocol.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// A command for the total order.
    Command(KvCommand),
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
    // value may be kilobytes, not worth splitting).
    let words: Vec<&str> = if verb == "put" {
        rest.split_whitespace().take(1).collect()
    } else {
        rest.split_whitespace().collect()
    };
    Ok(match (verb, words.as_slice()) {
        ("put", [key, ..]) => {
            let value = rest.trim_start()[key.len()..].trim_start().to_owned();
            Request::Command(KvCommand::Put {
                key: (*key).to_owned(),
                value,
            })
        }
        ("get", [key]) => Request::Command(KvCommand::Get {
            key: (*key).to_owned(),
        }),
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
    let or_absent = |v: &Option<String>| v.clone().unwrap_or_else(|| "-".into());
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
        } => format!("CAS {pos} fail {}", or_absent(current)),
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
        let (tag, body) = match line.strip_prefix('#') {
            Some(rest) => {
                let (tag, body) = rest.split_once(' ').unwrap_or((rest, ""));
                (format!("#{tag} "), body.to_owned())
            }
            None => (String::new(), line),
        };
        if body.trim().is_empty() {
            continue;
        }
        let say = {
            let output = output.clone();
            move |text: String| {
                let _ = output.send(format!("{tag}{text}"));
            }
        };
        match parse_request(&body) {
            Err(e) => say(format!("ERR {e}")),
            Ok(Request::Command(cmd)) => {
                let asked = std::time::Instant::now();
                let executed = replica.execute_traced(cmd);
                actix::spawn(async move {
                    let executed = executed.await;
                    actix_cpg::probe::record("server.execute→answer", asked.elapsed());
                    say(match executed {
                        Ok(e) => format_response(&e.response, e.state.applied),
                        Err(e) => format_error(&e),
                    });
                });
            }
            Ok(Request::LocalRead(key)) => {
                let value = replica
                    .query(move |s: &KvStore| s.get(&key).map(str::to_owned))
                    .await;
                say(match value {
                    Ok(v) => format!("LOCAL {}", v.unwrap_or_else(|| "-".into())),
                    Err(e) => format_error(&e),
                });
            }
            Ok(Request::Show) => say(crate::observe::replica_line(&replica).await),
            Ok(Request::Status) => {
                let s = replica.status();
                say(format!(
                    "STATUS primary={} epoch={} members={} applied={} holding={} version={}",
                    s.primary,
                    s.epoch.map(|e| e.to_string()).unwrap_or_else(|| "-".into()),
                    s.members.len(),
                    s.state.applied,
                    s.holding,
                    s.protocol_version
                        .map_or_else(|| "-".into(), |v| v.to_string())
                ));
            }
            Ok(Request::Refused) => {
                let r = replica.status().refused;
                say(format!(
                    "REFUSED not_member={} epoch={} inconsistent={} chunk={} stale={} overflow={}",
                    r.not_member, r.epoch, r.inconsistent, r.chunk, r.stale, r.overflow
                ));
            }
            Ok(Request::Digest) => {
                let digest = replica.query(|s: &KvStore| (s.len(), s.digest())).await;
                let applied = replica.status().state.applied;
                say(match digest {
                    Ok((keys, hash)) => format!("DIGEST {applied} {keys} {hash:016x}"),
                    Err(e) => format_error(&e),
                });
            }
            Ok(Request::Check) => {
                // Subscribed before asking: the outcome cannot be missed.
                let mut events = replica.subscribe();
                match replica.check().await {
                    Err(e) => say(format_error(&e)),
                    Ok(()) => {
                        actix::spawn(async move {
                            say(check_outcome(&mut events).await);
                        });
                    }
                }
            }
            Ok(Request::WaitPrimary) => {
                let replica = replica.clone();
                actix::spawn(async move {
                    say(match replica.wait_primary().await {
                        Ok(epoch) => format!("PRIMARY {epoch}"),
                        Err(e) => format_error(&e),
                    });
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
