//! Recording a member's ordered stream to a file, and reading it back.
//!
//! Every group-level decision is a function of the ordered stream (and the
//! state handed over in it), so a file holding that stream reproduces every
//! decision a member took — the tool to reach for after an incident, as
//! Pacemaker's `crm_simulate` is for its scheduler. Each runtime records
//! its own member:
//!
//! | runtime | turn on with | replay with |
//! |---|---|---|
//! | registry group | [`GroupConfig::record_to`](crate::GroupConfig::record_to) | [`crate::group::replay`] |
//! | election | [`ElectionConfig::record_to`](crate::ElectionConfig::record_to) | [`crate::election::replay`] |
//! | replica | [`ReplicaConfig::record_to`](crate::ReplicaConfig::record_to) | [`crate::replicated::replay`] (needs the state machine) |
//!
//! Read a file with [`Recording::open`]; `acpg replay FILE` prints the
//! decisions of registry and election recordings.
//!
//! ```text
//!  file  := "ACPGREC" version(u8) protocol(u8) local-member(bincode) record*
//!  record := len(u32 LE) bincode(Recorded)
//! ```
//!
//! The header names the runtime that recorded the file ([`Protocol`]):
//! the envelopes alone cannot always tell (a file may hold nothing but
//! confchgs), and each runtime's decisions replay only through its own
//! core. Version 1 files have no protocol byte and are registry
//! recordings (only the group runtime could record then).
//!
//! The ordered events are kept (deliveries and confchgs). Node-local
//! notifications take no group decision (a member multicasts its quorum
//! facts, which are recorded as deliveries), with one exception: an
//! election member *acts* as leader only while its own node's latest
//! quorum notification says quorate, so an election recording also holds
//! those notifications ([`Recorded::Quorum`]), at their place among the
//! other events.
//!
//! A member of a keyed group ([`GroupConfig::key`](crate::GroupConfig::key))
//! records what its runtime decided from: the deliveries that verified,
//! with their MAC stripped; the ones dropped as unauthenticated are not in
//! the file. A recording so replays without the key (and holds no MAC an
//! attacker could reuse).

use std::fs::File;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::path::Path;

use serde::{Deserialize, Serialize};

use crate::transport::{GroupName, Member, MemberChange, QuorumState, TransportEvent};
use crate::wire::Codec;

const MAGIC: &[u8; 7] = b"ACPGREC";
const VERSION: u8 = 2;
/// The version before files named their runtime: a registry recording.
const VERSION_REGISTRY_ONLY: u8 = 1;
/// Largest record a reader accepts (a delivery is at most ~1 MiB).
const MAX_RECORD: u32 = 16 << 20;

/// The runtime that recorded a file, named in its header: its decisions
/// replay only through that runtime's core.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Protocol {
    /// A registry group ([`crate::Group`]): replay with
    /// [`crate::group::replay`].
    Registry,
    /// An election member ([`crate::Election`]): replay with
    /// [`crate::election::replay`].
    Election,
    /// A replica ([`crate::Replica`]): replay with
    /// [`crate::replicated::replay`], which needs the state machine.
    Replica,
}

impl Protocol {
    fn byte(self) -> u8 {
        match self {
            Protocol::Registry => 0,
            Protocol::Election => 1,
            Protocol::Replica => 2,
        }
    }

    fn from_byte(byte: u8) -> Option<Protocol> {
        match byte {
            0 => Some(Protocol::Registry),
            1 => Some(Protocol::Election),
            2 => Some(Protocol::Replica),
            _ => None,
        }
    }
}

/// `registry group`, `election`, `replica`.
impl std::fmt::Display for Protocol {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Protocol::Registry => "registry group",
            Protocol::Election => "election",
            Protocol::Replica => "replica",
        })
    }
}

/// One entry of a recorded stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Recorded {
    /// A delivered message, as received.
    Deliver {
        /// The sender.
        from: Member,
        /// The bytes, envelope included (without the MAC in a keyed
        /// group: see the module docs).
        bytes: Vec<u8>,
    },
    /// A configuration change.
    ConfChg {
        /// The view after it.
        members: Vec<Member>,
        /// Who joined, and why.
        joined: Vec<MemberChange>,
        /// Who left, and why.
        left: Vec<MemberChange>,
    },
    /// This node's quorum service reported (election recordings only: see
    /// the module docs).
    Quorum(QuorumState),
}

impl Recorded {
    /// The entry for a transport event, if it belongs in a recording (a
    /// delivery or a confchg; see [`Recorded::Quorum`] for the exception).
    pub fn from_event(event: &TransportEvent) -> Option<Recorded> {
        match event {
            TransportEvent::Deliver { from, bytes } => Some(Recorded::Deliver {
                from: *from,
                bytes: bytes.clone(),
            }),
            TransportEvent::ConfChg {
                members,
                joined,
                left,
            } => Some(Recorded::ConfChg {
                members: members.clone(),
                joined: joined.clone(),
                left: left.clone(),
            }),
            _ => None,
        }
    }
}

fn codec() -> Codec {
    Codec::new(MAX_RECORD as usize)
}

fn invalid(e: impl std::fmt::Display) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e.to_string())
}

/// Appends a member's ordered stream to a file.
pub struct Recorder {
    out: BufWriter<File>,
}

impl Recorder {
    /// Creates (truncates) `path` and writes the header: recorded by
    /// `local`, a member of a `protocol` runtime.
    pub fn create(path: &Path, local: Member, protocol: Protocol) -> io::Result<Recorder> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION, protocol.byte()])?;
        out.write_all(&codec().encode_payload(&local).map_err(invalid)?)?;
        Ok(Recorder { out })
    }

    /// Opens the recorder a runtime's config asks for (`None`: recording
    /// is off); the error names the file.
    pub(crate) fn for_config(
        path: Option<&Path>,
        local: Member,
        protocol: Protocol,
    ) -> Result<Option<Recorder>, String> {
        path.map(|path| {
            Recorder::create(path, local, protocol).map_err(|e| format!("{}: {e}", path.display()))
        })
        .transpose()
    }

    /// Appends one entry.
    pub fn append(&mut self, entry: &Recorded) -> io::Result<()> {
        let body = codec().encode_payload(entry).map_err(invalid)?;
        let len = u32::try_from(body.len()).map_err(invalid)?;
        self.out.write_all(&len.to_le_bytes())?;
        self.out.write_all(&body)
    }

    /// Writes buffered entries to the file.
    pub fn flush(&mut self) -> io::Result<()> {
        self.out.flush()
    }
}

/// What every runtime does with an entry: appends it to its recorder, if
/// it has one; a confchg is written out at once (membership changes are
/// what an incident review needs first). A write that fails stops the
/// recording, logged once; the member goes on.
pub(crate) fn keep(recorder: &mut Option<Recorder>, group: &GroupName, entry: Option<Recorded>) {
    let (Some(out), Some(entry)) = (recorder.as_mut(), entry) else {
        return;
    };
    let mut result = out.append(&entry);
    if matches!(entry, Recorded::ConfChg { .. }) {
        result = result.and_then(|()| out.flush());
    }
    if let Err(e) = result {
        tracing::error!(%group, "recording stopped: {e}");
        *recorder = None;
    }
}

/// Writes out what a runtime's recorder buffered, when the runtime stops.
pub(crate) fn finish(recorder: &mut Option<Recorder>, group: &GroupName) {
    if let Some(out) = recorder {
        if let Err(e) = out.flush() {
            tracing::error!(%group, "recording not flushed: {e}");
        }
    }
}

/// A recorded stream, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
    /// The runtime that recorded it.
    pub protocol: Protocol,
    /// The member that recorded it.
    pub local: Member,
    /// Its ordered events.
    pub entries: Vec<Recorded>,
}

impl Recording {
    /// Reads a whole file. A truncated last record (the process died while
    /// writing) is ignored; anything else malformed is an error.
    pub fn open(path: &Path) -> io::Result<Recording> {
        let mut input = BufReader::new(File::open(path)?);
        let mut magic = [0u8; 8];
        input.read_exact(&mut magic)?;
        if &magic[..7] != MAGIC {
            return Err(invalid("not an actix-cpg recording"));
        }
        let protocol = match magic[7] {
            VERSION_REGISTRY_ONLY => Protocol::Registry,
            VERSION => {
                let mut byte = [0u8; 1];
                input.read_exact(&mut byte)?;
                Protocol::from_byte(byte[0])
                    .ok_or_else(|| invalid(format!("unknown recording protocol {}", byte[0])))?
            }
            other => {
                return Err(invalid(format!(
                    "an actix-cpg recording of version {other}; this build reads 1 and {VERSION}"
                )))
            }
        };
        let mut member = [0u8; 8];
        input.read_exact(&mut member)?;
        let local: Member = codec().decode_payload(&member).map_err(invalid)?;
        let mut entries = Vec::new();
        loop {
            let mut len = [0u8; 4];
            match input.read_exact(&mut len) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            let len = u32::from_le_bytes(len);
            if len > MAX_RECORD {
                return Err(invalid(format!("record of {len} bytes")));
            }
            let mut body = vec![0u8; len as usize];
            match input.read_exact(&mut body) {
                Ok(()) => {}
                Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => break,
                Err(e) => return Err(e),
            }
            entries.push(codec().decode_payload(&body).map_err(invalid)?);
        }
        Ok(Recording {
            protocol,
            local,
            entries,
        })
    }
}

/// One decision reproduced by [`crate::group::replay`],
/// [`crate::election::replay`] or [`crate::replicated::replay`], at its
/// position in the stream.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Replayed {
    /// Index of the entry that produced it.
    pub position: usize,
    /// What the member decided, in words.
    pub decision: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_recording_reads_back_and_a_torn_tail_is_ignored() {
        let dir = std::env::temp_dir().join(format!("acpg-rec-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("a.rec");
        let me = Member::new(1, 7);
        let entries = vec![
            Recorded::ConfChg {
                members: vec![me],
                joined: vec![MemberChange {
                    member: me,
                    reason: crate::transport::Reason::Join,
                }],
                left: vec![],
            },
            Recorded::Deliver {
                from: me,
                bytes: b"hello".to_vec(),
            },
            Recorded::Quorum(QuorumState {
                quorate: true,
                ring_id: crate::transport::RingId {
                    seq: 4,
                    nodeid: crate::transport::NodeId(1),
                },
                nodes: vec![crate::transport::NodeId(1)],
            }),
        ];
        let mut rec = Recorder::create(&path, me, Protocol::Election).unwrap();
        for e in &entries {
            rec.append(e).unwrap();
        }
        rec.flush().unwrap();
        drop(rec);
        let back = Recording::open(&path).unwrap();
        assert_eq!(back.protocol, Protocol::Election);
        assert_eq!(back.local, me);
        assert_eq!(back.entries, entries);

        let mut bytes = std::fs::read(&path).unwrap();
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2]);
        std::fs::write(&path, &bytes).unwrap();
        assert_eq!(Recording::open(&path).unwrap().entries, entries);

        std::fs::write(&path, b"garbage!").unwrap();
        assert!(Recording::open(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_version_1_file_reads_as_a_registry_recording_and_an_unknown_protocol_is_refused() {
        let dir = std::env::temp_dir().join(format!("acpg-rec-v1-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("old.rec");
        let me = Member::new(2, 9);
        let entry = Recorded::Deliver {
            from: me,
            bytes: vec![1, 2, 3],
        };
        // The layout version 1 wrote: no protocol byte.
        let mut bytes = MAGIC.to_vec();
        bytes.push(VERSION_REGISTRY_ONLY);
        bytes.extend(codec().encode_payload(&me).unwrap());
        let body = codec().encode_payload(&entry).unwrap();
        bytes.extend((body.len() as u32).to_le_bytes());
        bytes.extend(body);
        std::fs::write(&path, &bytes).unwrap();
        let back = Recording::open(&path).unwrap();
        assert_eq!(back.protocol, Protocol::Registry);
        assert_eq!((back.local, back.entries), (me, vec![entry]));

        let mut unknown = MAGIC.to_vec();
        unknown.extend([VERSION, 9]);
        unknown.extend(codec().encode_payload(&me).unwrap());
        std::fs::write(&path, &unknown).unwrap();
        assert!(Recording::open(&path).is_err());
        let mut newer = MAGIC.to_vec();
        newer.extend([VERSION + 1, 0]);
        std::fs::write(&path, &newer).unwrap();
        assert!(Recording::open(&path).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
