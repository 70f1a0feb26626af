//! Recording a member's ordered stream to a file, and reading it back.
//!
//! Every group-level decision is a function of the ordered stream (and the
//! state handed over in it), so a file holding that stream reproduces every
//! decision a member took — the tool to reach for after an incident, as
//! Pacemaker's `crm_simulate` is for its scheduler. Turn recording on with
//! [`GroupConfig::record_to`](crate::GroupConfig::record_to); read a file
//! with [`Recording::open`] and feed it to [`crate::group::replay`], or run
//! `cargo run --example replay -- FILE`.
//!
//! ```text
//!  file  := "ACPGREC" version(u8) local-member(bincode) record*
//!  record := len(u32 LE) bincode(Recorded)
//! ```
//!
//! Only the group's own ordered events are kept (deliveries and confchgs):
//! totem and quorum notifications are node-local and take no decision.
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

use crate::transport::{Member, MemberChange, TransportEvent};
use crate::wire::Codec;

const MAGIC: &[u8; 7] = b"ACPGREC";
const VERSION: u8 = 1;
/// Largest record a reader accepts (a delivery is at most ~1 MiB).
const MAX_RECORD: u32 = 16 << 20;

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
}

impl Recorded {
    /// The entry for a transport event, if it belongs in a recording.
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
    /// Creates (truncates) `path` and writes the header for `local`.
    pub fn create(path: &Path, local: Member) -> io::Result<Recorder> {
        let mut out = BufWriter::new(File::create(path)?);
        out.write_all(MAGIC)?;
        out.write_all(&[VERSION])?;
        out.write_all(&codec().encode_payload(&local).map_err(invalid)?)?;
        Ok(Recorder { out })
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

/// A recorded stream, read back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recording {
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
        if &magic[..7] != MAGIC || magic[7] != VERSION {
            return Err(invalid("not an actix-cpg recording of this version"));
        }
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
        Ok(Recording { local, entries })
    }
}

/// One decision reproduced by [`crate::group::replay`], at its position in
/// the stream.
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
        ];
        let mut rec = Recorder::create(&path, me).unwrap();
        for e in &entries {
            rec.append(e).unwrap();
        }
        rec.flush().unwrap();
        drop(rec);
        let back = Recording::open(&path).unwrap();
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
}
