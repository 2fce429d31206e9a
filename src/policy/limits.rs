//! Content limits (data phase): how many attachments a message carries, how many files its
//! compressed attachments hold, how deeply its MIME parts and archives nest, whether an archive
//! declares a zip-bomb expansion, and which parts are encrypted and so cannot be scanned. The
//! 50 MB size limit is not here: it is enforced while DATA is read.
//!
//! A one-part plain text message sent as it is (`message::plain_text_only`, read from its
//! header fields) has nothing here to count and is passed without the parse.
//!
//! [`inspect`] returns an [`Inspection`]; a [`Violation`] in it becomes a `552`/`554` reply
//! whose text names the rule (see [`Violation::code`]). Encrypted content is never a violation:
//! it is delivered untouched and listed in [`Inspection::encrypted`].
//!
//! # What counts as an attachment
//!
//! The rule of the virus stage, so that "attachment" means one thing in every event:
//! - a leaf part whose `Content-Disposition` is `attachment`, or that has a file name
//!   (`filename=` or `name=`), or whose type is not `text/*`;
//! - an attached message (`message/rfc822`, `message/global`) counts as one attachment, and the
//!   attachments inside it count as well: they reach the recipient just the same, and hiding
//!   files in a forwarded message must not get round the limit;
//! - never: a `multipart/*` container; the body of a message, that is the root part of the
//!   message or of an attached message when it is a single leaf, whatever its type; the
//!   signature of a `multipart/signed` (`application/pgp-signature`, `…pkcs7-signature`), and
//!   the two parts of a `multipart/encrypted`, which are the message's own wrapping.
//!
//! So a `text/plain` and `text/html` pair in a `multipart/alternative` is the body, and an inline
//! image with a file name is an attachment.
//!
//! # Archives
//!
//! A leaf is a zip when its decoded content starts with `PK\x03\x04` or `PK\x05\x06`, whatever
//! its type and name, or when its name ends in `.zip` (a zip with bytes prepended still opens in
//! an unzip tool). Only the central directory is read (`ZipArchive::new` on the bytes in memory,
//! entry metadata through `by_index_data`); nothing is written to disk.
//! - **Files**: every entry that is not a directory, at every level: a nested zip is a file of
//!   its parent and its own files are added to the parent's count. Duplicate names, which the
//!   zip crate folds into one entry, are counted from the raw central directory.
//! - **Documents**: Office Open XML (`[Content_Types].xml`) and OpenDocument/EPUB (first entry
//!   `mimetype`) are zips too, but their members are not files the sender attached: they do
//!   not count (a slide deck holds hundreds). Zips nested in them count as usual, and the
//!   bomb, depth and encryption rules apply to them like to any zip.
//! - **Depth**: the attachment is level 1, a zip inside it level 2; a zip found below level
//!   `max_archive_depth` refuses the message. An entry is a nested zip by its first four
//!   decompressed bytes (or a `.zip` name), so each candidate entry is opened for 4 bytes.
//! - **Bombs**: the declared (central directory) sizes of one level, summed, against the
//!   archive's own length: more than `max_expansion_ratio` times, once over [`RATIO_FLOOR`],
//!   is a bomb; so is an entry that declares such a ratio before it is opened, and so are
//!   declared sizes of all archives in the message adding up to more than
//!   `max_expanded_size`. A nested zip is decompressed only after its declared size has passed
//!   these checks, and never beyond that declared size, so at most `max_expanded_size` octets
//!   are ever decompressed for one message.
//! - An unreadable central directory is not a violation (the part may not be a zip at all); its
//!   name goes into [`Inspection::unreadable`], as does an entry that cannot be decompressed
//!   (only stored and deflate are built in), since it might be a zip.
//!
//! # Encrypted content
//!
//! Listed in [`Inspection::encrypted`] and delivered untouched: zip entries with the encryption
//! flag (ZipCrypto or AES) as `archive.zip/entry`; S/MIME parts (`application/pkcs7-mime`,
//! `application/x-pkcs7-mime`, a `.p7m` name); PGP/MIME (`multipart/encrypted`,
//! `application/pgp-encrypted`); inline PGP: `-----BEGIN PGP MESSAGE-----` in a text part, or at
//! the start of any other part.
//!
//! # Bounds on hostile input
//!
//! mail-parser's full `parse` is not used: measured on 0.11.9, an attached message nested
//! 10,000 deep inside a base64 part overflows the stack, each nested level copies the whole
//! decoded text again (quadratic memory), every header line of a block becomes a `Header` of
//! about 100 octets, and RFC 2231 parameter continuations cost quadratic time (1.5 MB of them
//! took 12 s). The walk here is mail-parser's own stream primitives driven by an explicit
//! stack, in one pass over the message:
//! - a header block is scanned here, and only its `Content-Type`, `Content-Disposition` and
//!   `Content-Transfer-Encoding` fields (the last of each, as mail-parser would pick) go to
//!   mail-parser's field parser, each cut at [`FIELD_LIMIT`] octets and [`PARAM_LIMIT`]
//!   parameters;
//! - the walk stops at `max_parts` parts and `max_mime_depth` levels, so 100,000 parts or a
//!   nesting 1,000 deep cost what 1,001 parts or 21 levels cost;
//! - an attached message in base64 or quoted-printable is decoded into its own buffer and walked
//!   after its parent, at most [`MAX_ENCODED_MESSAGES`] such levels deep (as mail-parser): the
//!   buffers alive at once stay under twice the message;
//! - a boundary longer than [`MAX_BOUNDARY`] is not followed (RFC 2046 allows 70): such a
//!   multipart is one opaque part, recorded in [`Inspection::unreadable`];
//! - a multipart whose boundary never comes makes a parser read the rest of the message in
//!   vain, mail-parser's full parse (the virus stage) as much as this walk: 997 of them before
//!   45 MB of text cost each some 30 s (test build), and the virus stage then answered 451.
//!   The octets so read are counted (for any multipart that opens no container, whatever the
//!   reason, so that mail-parser is never worse off than the count), and past
//!   [`RESCAN_FACTOR`] times the message (plus [`RESCAN_FLOOR`]) the message is refused;
//! - a `Content-Type` or `Content-Disposition` field split into more than
//!   [`MAX_PARAM_SECTIONS`] RFC 2231 sections (`name*0=`, `name*1*=`) refuses the message:
//!   mail-parser merges sections in quadratic time, and the virus stage's full parse of a
//!   10 MB field of them outlived the stage timeout (a 451 for the sender, a blocking thread
//!   busy for minutes). Every such field of every header block walked is counted, not only
//!   the last one, since mail-parser parses them all;
//! - base64 that mail-parser refuses is decoded leniently here, skipping what is not base64, as
//!   mail clients do, so a stray character cannot hide a zip from the count;
//! - a central directory that declares more than [`MAX_ZIP_ENTRIES`] entries is refused before
//!   the zip crate reads it (it would hold every entry in memory);
//! - the stage walks a message of up to 16 KiB on the task's own thread
//!   ([`inspect_in_place`]), which gives up at the first archive or boundary searched for in
//!   vain; everything else goes to a blocking thread.

use super::{Action, Facts, Stage, StageFuture, Verdict};
use crate::smtp::reply::Reply;
use mail_parser::HeaderValue;
use mail_parser::parsers::MessageStream;
use serde::{Deserialize, Serialize};
use std::borrow::Cow;
use std::io::{Cursor, Read};
use zip::ZipArchive;

/// `[policy.limits]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Attachments per message (see the module documentation for what counts). Default 50.
    pub max_attachments: usize,
    /// Files inside one compressed attachment, nested archives counted inside their parent.
    /// Default 32.
    pub max_archive_files: usize,
    /// Archive levels: the attachment is level 1, a zip inside it level 2. Default 3.
    pub max_archive_depth: usize,
    /// Declared uncompressed size over compressed size, per archive level and per nested entry,
    /// above [`RATIO_FLOOR`]. Default 100.
    pub max_expansion_ratio: u64,
    /// Declared uncompressed octets of all archives in the message together. Default 500 MiB.
    pub max_expanded_size: u64,
    /// Containers (multiparts and attached messages) around any part. Default 20.
    pub max_mime_depth: usize,
    /// MIME parts in all, containers included. Default 1000.
    pub max_parts: usize,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            max_attachments: 50,
            max_archive_files: 32,
            max_archive_depth: 3,
            max_expansion_ratio: 100,
            max_expanded_size: 500 * 1024 * 1024,
            max_mime_depth: 20,
            max_parts: 1000,
        }
    }
}

/// What the stage found; the pipeline turns a violation into a 552/554 reply whose text names
/// the rule.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Inspection {
    /// Attachments counted. After a violation other than too many attachments the walk stops,
    /// so this is then the count up to that point.
    pub attachments: usize,
    /// Every zip found, nested ones inside their top-level entry.
    pub archives: Vec<ArchiveInfo>,
    /// Names of encrypted parts and entries: delivered untouched, recorded "unscanned:
    /// encrypted".
    pub encrypted: Vec<String>,
    /// Names of parts and entries that could not be opened: a zip whose central directory is
    /// unreadable, a zip entry that cannot be decompressed (a compression method other than
    /// stored or deflate, a broken local header), a message encoded inside more than
    /// [`MAX_ENCODED_MESSAGES`] others, a multipart with an over-long boundary. Not a
    /// violation: recorded like `encrypted`, and the virus stage still scans them.
    pub unreadable: Vec<String>,
    pub violation: Option<Violation>,
}

/// One zip attachment (or a zip that is a message's whole body), nested zips included.
#[derive(Debug, Clone, Serialize)]
pub struct ArchiveInfo {
    /// The part's file name, or `part 1.2` by its position.
    pub filename: String,
    /// Files counted against `max_archive_files`, at every level (document members excluded).
    pub files: usize,
    /// Deepest level opened: 1 for a zip without nested zips.
    pub depth: usize,
    /// Declared uncompressed octets of every entry at every level opened.
    pub declared_size: u64,
    /// Entries with the encryption flag, at every level.
    pub encrypted_entries: usize,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub enum Violation {
    TooManyAttachments {
        found: usize,
        max: usize,
    },
    TooManyArchiveFiles {
        archive: String,
        found: usize,
        max: usize,
    },
    ArchiveTooDeep {
        archive: String,
        max: usize,
    },
    ArchiveBomb {
        archive: String,
        declared: u64,
        compressed: u64,
    },
    MimeTooDeep {
        max: usize,
    },
    TooManyParts {
        max: usize,
    },
    /// A MIME field split into more RFC 2231 sections than [`MAX_PARAM_SECTIONS`].
    TooManyParameterSections {
        max: usize,
    },
    /// Multiparts whose boundary never comes, so many that looking for them would read the
    /// message more than [`RESCAN_FACTOR`] times over.
    UnusedBoundaries {
        found: usize,
    },
}

impl Violation {
    /// The reply code and enhanced status code (RFC 3463):
    /// - too many attachments, parts or archive files: `552 5.3.4`. These are the service's
    ///   administrative capacity limits on a message, listed beside the size limit, and X.3.4
    ///   ("message too big for system … physical or administrative reasons") is what senders'
    ///   servers already map to "make it smaller"; 552 is the reply for an exceeded allocation.
    /// - MIME parts or archives nested too deeply, a MIME field in too many sections, too many
    ///   boundaries that never come: `554 5.6.0`. Nothing is too big; the content has a
    ///   structure we refuse to take apart, a media error (X.6.0: "something about the content
    ///   … caused it to be considered undeliverable").
    /// - a likely archive bomb: `554 5.7.0`. A refusal for security, not capacity (X.7.0: other
    ///   security status); 554 is the transaction failing.
    pub fn code(&self) -> (u16, &'static str) {
        match self {
            Violation::TooManyAttachments { .. }
            | Violation::TooManyParts { .. }
            | Violation::TooManyArchiveFiles { .. } => (552, "5.3.4"),
            Violation::MimeTooDeep { .. }
            | Violation::ArchiveTooDeep { .. }
            | Violation::TooManyParameterSections { .. }
            | Violation::UnusedBoundaries { .. } => (554, "5.6.0"),
            Violation::ArchiveBomb { .. } => (554, "5.7.0"),
        }
    }

    /// Plain words naming the rule, safe for one reply line: names from the message are cut to
    /// printable ASCII.
    pub fn text(&self) -> String {
        match self {
            Violation::TooManyAttachments { found, max } => {
                format!("message refused: {found} attachments, the limit is {max}")
            }
            Violation::TooManyArchiveFiles {
                archive,
                found,
                max,
            } => format!(
                "message refused: {found} files in compressed attachment {}, the limit is {max}",
                printable(archive)
            ),
            Violation::ArchiveTooDeep { archive, max } => format!(
                "message refused: archives nested more than {max} deep in {}",
                printable(archive)
            ),
            Violation::ArchiveBomb {
                archive,
                declared,
                compressed,
            } => format!(
                "message refused: archive {} declares {declared} octets uncompressed from \
                 {compressed}, a likely archive bomb",
                printable(archive)
            ),
            Violation::MimeTooDeep { max } => {
                format!("message refused: MIME parts nested more than {max} deep")
            }
            Violation::TooManyParts { max } => {
                format!("message refused: more than {max} MIME parts")
            }
            Violation::TooManyParameterSections { max } => {
                format!(
                    "message refused: a MIME field split into more than {max} parameter sections"
                )
            }
            Violation::UnusedBoundaries { found } => {
                format!("message refused: {found} multipart boundaries declared but never used")
            }
        }
    }
}

/// A name from the message, fit for a reply line and a log: printable ASCII, at most 80
/// characters.
fn printable(name: &str) -> String {
    let mut out: String = name
        .chars()
        .take(80)
        .map(|c| {
            if c.is_ascii_graphic() || c == ' ' {
                c
            } else {
                '?'
            }
        })
        .collect();
    if name.chars().nth(80).is_some() {
        out.push_str("...");
    }
    out
}

/// The stage: runs [`inspect`] off the async threads (a hostile 50 MB message takes a while),
/// a small message in place unless it needs long work, and refuses the message on a violation.
pub struct LimitsStage {
    pub config: LimitsConfig,
}

impl Stage for LimitsStage {
    fn name(&self) -> &'static str {
        "limits"
    }

    fn on_data<'a>(&'a self, _: &'a Facts, raw: &'a [u8], _: &'a [Verdict]) -> StageFuture<'a> {
        Box::pin(async move {
            // Nothing to count in one plain text part: no copy, no blocking thread, no parse.
            if crate::message::plain_text_only(raw) {
                return Ok(verdict(self.name(), &Inspection::default()));
            }
            if raw.len() <= super::INLINE_READ
                && let Some(found) = inspect_in_place(raw, &self.config)
            {
                return Ok(verdict(self.name(), &found));
            }
            let config = self.config.clone();
            let raw = raw.to_vec();
            let found = tokio::task::spawn_blocking(move || inspect(&raw, &config)).await?;
            Ok(verdict(self.name(), &found))
        })
    }
}

/// The verdict for an inspection: a reject on a violation; otherwise a note when something
/// could not be scanned, so that the event records it.
fn verdict(stage: &'static str, found: &Inspection) -> Verdict {
    let mut v = Verdict::new(stage);
    if let Some(violation) = &found.violation {
        let (code, enhanced) = violation.code();
        let text = violation.text();
        v = v.action(
            Action::Reject(Reply::new(code, enhanced, text.clone())),
            text,
        );
    } else if !found.encrypted.is_empty() || !found.unreadable.is_empty() {
        let mut notes = Vec::new();
        if !found.encrypted.is_empty() {
            notes.push(format!("unscanned: encrypted: {}", names(&found.encrypted)));
        }
        if !found.unreadable.is_empty() {
            notes.push(format!(
                "unscanned: unreadable: {}",
                names(&found.unreadable)
            ));
        }
        v.reason = notes.join("; ");
    } else if found.archives.is_empty() {
        return v;
    }
    v.detail = serde_json::to_value(found).unwrap_or_default();
    v
}

fn names(list: &[String]) -> String {
    let shown: Vec<String> = list.iter().take(10).map(|n| printable(n)).collect();
    match list.len() {
        n if n > 10 => format!("{} and {} more", shown.join(", "), n - 10),
        _ => shown.join(", "),
    }
}

/// Declared sizes below this never make a bomb, whatever the ratio: a 200-octet zip of 30 kB of
/// spaces is harmless.
pub const RATIO_FLOOR: u64 = 1 << 20;
/// Names kept in each of [`Inspection::encrypted`] and [`Inspection::unreadable`].
pub const MAX_NAMES: usize = 1000;
/// Attached messages encoded (base64, quoted-printable) inside each other that are opened;
/// mail-parser stops at the same depth.
pub const MAX_ENCODED_MESSAGES: usize = 3;
/// Longest multipart boundary followed (RFC 2046 allows 70).
pub const MAX_BOUNDARY: usize = 256;
/// Octets of one MIME field given to mail-parser.
pub const FIELD_LIMIT: usize = 64 * 1024;
/// Parameters of one `Content-Type`/`Content-Disposition` given to mail-parser.
pub const PARAM_LIMIT: usize = 64;
/// RFC 2231 sections allowed in one `Content-Type` or `Content-Disposition` field, counted as the
/// `*` in it (each section's name has one, `name*1*=` two). A long file name needs a dozen or
/// two; mail-parser's merge is quadratic in them (100,000 in 1 MB took 10 s).
pub const MAX_PARAM_SECTIONS: usize = 64;
/// Octets that searches for boundaries that never come may read, as a multiple of the message's
/// length, before the message is refused ([`Violation::UnusedBoundaries`]).
pub const RESCAN_FACTOR: u64 = 8;
/// Added to that allowance (some 50 ms of searching), so that a small broken message is not
/// refused for it.
pub const RESCAN_FLOOR: u64 = 64 << 20;
/// Central directory entries (files and directories) read from one zip; a zip that declares
/// more is refused as having too many files. 65,535 is the most a zip without Zip64 can hold.
pub const MAX_ZIP_ENTRIES: u64 = 65_535;

/// Inspects a raw message (RFC 5322, CRLF or bare LF). Never fails and never panics: what cannot
/// be read is left out or listed in [`Inspection::unreadable`].
pub fn inspect(raw: &[u8], cfg: &LimitsConfig) -> Inspection {
    walk_message(raw, cfg, false).0
}

/// [`inspect`] for the task's own thread: the same result, or `None` as soon as the walk meets
/// work that can take long — an archive to open, a boundary searched for in vain — for the
/// caller to [`inspect`] the message on a blocking thread instead. What is left (header blocks,
/// decoding parts and at most [`MAX_ENCODED_MESSAGES`] attached messages) is linear in the
/// message's size.
pub fn inspect_in_place(raw: &[u8], cfg: &LimitsConfig) -> Option<Inspection> {
    match walk_message(raw, cfg, true) {
        (found, false) => Some(found),
        (_, true) => None,
    }
}

/// The inspection, and whether a walk `in_place` gave up.
fn walk_message(raw: &[u8], cfg: &LimitsConfig, in_place: bool) -> (Inspection, bool) {
    let mut walk = Walk {
        cfg,
        in_place,
        gave_up: false,
        parts: 0,
        expanded: 0,
        rescan_allowance: (raw.len() as u64)
            .saturating_mul(RESCAN_FACTOR)
            .saturating_add(RESCAN_FLOOR),
        rescanned: 0,
        unused_boundaries: 0,
        halted: false,
        found: Inspection {
            attachments: 0,
            archives: Vec::new(),
            encrypted: Vec::new(),
            unreadable: Vec::new(),
            violation: None,
        },
    };
    let mut pending = Vec::new();
    walk.buffer(raw, 0, 0, "", &mut pending);
    // Attached messages in base64 or quoted-printable, each walked after its parent and dropped
    // before its own children are walked: decoding never grows the content, so the copies
    // alive at once stay under twice the message.
    while let Some(nested) = pending.pop() {
        if walk.halted {
            break;
        }
        walk.buffer(
            &nested.bytes,
            nested.depth,
            nested.encoded,
            &nested.prefix,
            &mut pending,
        );
    }
    let mut found = walk.found;
    if let Some(Violation::TooManyAttachments { found: n, .. }) = &mut found.violation {
        *n = found.attachments;
    }
    (found, walk.gave_up)
}

struct Walk<'c> {
    cfg: &'c LimitsConfig,
    /// On the task's own thread ([`inspect_in_place`]): give up rather than do work that can
    /// take long.
    in_place: bool,
    gave_up: bool,
    parts: usize,
    /// Declared uncompressed octets of all archives so far.
    expanded: u64,
    /// Octets that boundary searches may read in vain ([`RESCAN_FACTOR`], [`RESCAN_FLOOR`]).
    rescan_allowance: u64,
    /// Octets read in vain so far: what follows each multipart whose boundary never came.
    rescanned: u64,
    unused_boundaries: usize,
    /// Nothing more is read. Too many attachments does not halt: the walk goes on counting so
    /// the reply gives the real number, but opens nothing more.
    halted: bool,
    found: Inspection,
}

/// An attached message in base64 or quoted-printable, decoded, waiting to be walked.
struct Nested {
    bytes: Vec<u8>,
    /// Containers around its root part.
    depth: usize,
    /// Encoded messages around it, itself included.
    encoded: usize,
    /// Its position, `2` or `1.3`, prefix of its parts' positions.
    prefix: String,
}

/// An open container in the walk of one buffer.
enum Frame {
    Multipart {
        boundary: Vec<u8>,
        kind: Multi,
        path: String,
        children: usize,
    },
    /// An attached message (not transfer-encoded) whose header block comes next.
    Message { path: String },
}

#[derive(Clone, Copy, PartialEq)]
enum Multi {
    Digest,
    Signed,
    Encrypted,
    Other,
}

#[derive(Clone, Copy, PartialEq)]
enum Cte {
    Identity,
    Base64,
    QuotedPrintable,
}

/// What the walk needs from a part's header block.
struct Head {
    /// Lower case; `text`/`plain` when there is no Content-Type (`message`/`rfc822` in a digest).
    ctype: String,
    subtype: String,
    boundary: Option<String>,
    filename: Option<String>,
    disposition_attachment: bool,
    cte: Cte,
}

impl Head {
    fn is(&self, ctype: &str, subtype: &str) -> bool {
        self.ctype == ctype && self.subtype == subtype
    }

    fn is_message(&self) -> bool {
        self.ctype == "message" && (self.subtype == "rfc822" || self.subtype == "global")
    }

    fn is_signature(&self) -> bool {
        self.is("application", "pgp-signature")
            || self.is("application", "pkcs7-signature")
            || self.is("application", "x-pkcs7-signature")
    }

    fn is_encrypted(&self) -> bool {
        self.is("application", "pkcs7-mime")
            || self.is("application", "x-pkcs7-mime")
            || self.is("application", "pgp-encrypted")
            || self
                .filename
                .as_deref()
                .is_some_and(|n| n.to_ascii_lowercase().ends_with(".p7m"))
    }

    fn named_zip(&self) -> bool {
        self.filename
            .as_deref()
            .is_some_and(|n| n.to_ascii_lowercase().ends_with(".zip"))
            || self.is("application", "zip")
            || self.is("application", "x-zip-compressed")
    }

    /// The name events use: the file name, or the position.
    fn label(&self, path: &str) -> String {
        match &self.filename {
            Some(name) if !name.is_empty() => name.clone(),
            _ => format!("part {path}"),
        }
    }
}

/// Adds a name to `encrypted` or `unreadable`, up to [`MAX_NAMES`]: a document of 60,000
/// members must not make an event of 60,000 names.
fn note(list: &mut Vec<String>, name: String) {
    if list.len() < MAX_NAMES {
        list.push(name);
    }
}

fn join(prefix: &str, n: usize) -> String {
    if prefix.is_empty() {
        n.to_string()
    } else {
        format!("{prefix}.{n}")
    }
}

/// The innermost open multipart's boundary: where the current part ends.
fn innermost(open: &[Frame]) -> Option<&[u8]> {
    open.iter().rev().find_map(|f| match f {
        Frame::Multipart { boundary, .. } => Some(&boundary[..]),
        Frame::Message { .. } => None,
    })
}

impl Walk<'_> {
    /// Whether the walk goes on with work that can take long; a walk in place stops there.
    fn may_take_long(&mut self) -> bool {
        if self.in_place {
            self.gave_up = true;
            self.halted = true;
        }
        !self.in_place
    }

    /// Records a violation (the first one found is kept) and, if `halt`, stops the walk.
    fn refuse(&mut self, violation: Violation, halt: bool) {
        if self.found.violation.is_none() {
            self.found.violation = Some(violation);
        }
        self.halted |= halt;
    }

    fn count_attachment(&mut self) {
        self.found.attachments += 1;
        if self.found.attachments > self.cfg.max_attachments {
            let max = self.cfg.max_attachments;
            self.refuse(Violation::TooManyAttachments { found: 0, max }, false);
        }
    }

    /// Walks one buffer: the message, or a decoded attached message. mail-parser's parse loop,
    /// with the tree replaced by a stack of open containers and every count bounded.
    fn buffer(
        &mut self,
        data: &[u8],
        base_depth: usize,
        encoded: usize,
        prefix: &str,
        pending: &mut Vec<Nested>,
    ) {
        let mut stream = MessageStream::new(data);
        let mut open: Vec<Frame> = Vec::new();
        'parts: loop {
            if self.halted {
                return;
            }
            let (fields, body_start) = scan_header_block(data, stream.offset());
            if fields.most_sections > MAX_PARAM_SECTIONS {
                let max = MAX_PARAM_SECTIONS;
                self.refuse(Violation::TooManyParameterSections { max }, true);
                return;
            }
            let has_body = body_start.is_some();
            let body_start = body_start.unwrap_or(data.len());
            // A fresh stream at the body: mail-parser's position may run one past the end.
            stream = MessageStream::new(data);
            stream.skip_bytes(body_start);

            self.parts += 1;
            if self.parts > self.cfg.max_parts {
                let max = self.cfg.max_parts;
                self.refuse(Violation::TooManyParts { max }, true);
                return;
            }
            let depth = base_depth + open.len();
            let (parent, is_root, path, container_path) = match open.last_mut() {
                Some(Frame::Multipart {
                    kind,
                    path,
                    children,
                    ..
                }) => {
                    *children += 1;
                    let own = join(path, *children);
                    (Some(*kind), false, own.clone(), own)
                }
                Some(Frame::Message { path }) => (None, true, join(path, 1), path.clone()),
                None => (None, true, join(prefix, 1), prefix.to_string()),
            };
            let head = fields.head(parent == Some(Multi::Digest));

            // A multipart opens a container when its first boundary is there.
            if head.ctype == "multipart" && has_body {
                match head.boundary.as_deref() {
                    Some(b) if b.len() > MAX_BOUNDARY => {
                        note(&mut self.found.unreadable, head.label(&path));
                    }
                    Some(b) if !b.is_empty() && stream.seek_next_part(b.as_bytes()) => {
                        if !self.deeper(depth) {
                            return;
                        }
                        let kind = match head.subtype.as_str() {
                            "digest" => Multi::Digest,
                            "signed" => Multi::Signed,
                            "encrypted" => Multi::Encrypted,
                            _ => Multi::Other,
                        };
                        if kind == Multi::Encrypted && parent != Some(Multi::Encrypted) {
                            note(&mut self.found.encrypted, head.label(&path));
                        }
                        open.push(Frame::Multipart {
                            boundary: b.as_bytes().to_vec(),
                            kind,
                            path: container_path,
                            children: 0,
                        });
                        stream.skip_crlf();
                        continue 'parts;
                    }
                    _ => {}
                }
                // No container opened: a parser looking for the boundary (mail-parser looks
                // even for one too long, or one past the parameters read here) read to the end.
                // Counted even when there is no boundary to look for: never too little.
                if !self.boundary_unused(data.len().saturating_sub(stream.offset())) {
                    return;
                }
            }

            // An attached message that is not transfer-encoded goes on in the same stream.
            if head.is_message() && head.cte == Cte::Identity && has_body {
                if !is_root {
                    self.count_attachment();
                }
                if !self.deeper(depth) {
                    return;
                }
                open.push(Frame::Message {
                    path: container_path,
                });
                continue 'parts;
            }

            // A leaf: its body runs to the innermost boundary, or to the end.
            let boundary = innermost(&open);
            let (body, terminated) = leaf_body(&mut stream, data, body_start, boundary, head.cte);
            self.leaf(&head, body, &path, is_root, parent, depth, encoded, pending);
            if boundary.is_none() || !terminated || !has_body {
                break;
            }

            // Close what ended with this part: attached messages end with their body, and a
            // multipart ends at its closing delimiter, after which the enclosing one goes on.
            loop {
                while let Some(Frame::Message { .. }) = open.last() {
                    open.pop();
                }
                if open.is_empty() {
                    break 'parts;
                }
                if !stream.is_multipart_end() {
                    break;
                }
                open.pop();
                match innermost(&open) {
                    Some(b) if stream.seek_next_part_offset(b).is_some() => continue,
                    _ => break 'parts,
                }
            }
        }
    }

    /// Counts a multipart whose boundary never came, and the `rest` octets a search for it read;
    /// refuses the message once they are over the allowance.
    fn boundary_unused(&mut self, rest: usize) -> bool {
        if !self.may_take_long() {
            return false;
        }
        self.unused_boundaries += 1;
        self.rescanned = self.rescanned.saturating_add(rest as u64);
        if self.rescanned > self.rescan_allowance {
            let found = self.unused_boundaries;
            self.refuse(Violation::UnusedBoundaries { found }, true);
            return false;
        }
        true
    }

    /// Whether one more container fits in `max_mime_depth`; refuses the message if not.
    fn deeper(&mut self, depth: usize) -> bool {
        if depth + 1 > self.cfg.max_mime_depth {
            let max = self.cfg.max_mime_depth;
            self.refuse(Violation::MimeTooDeep { max }, true);
            return false;
        }
        true
    }

    #[allow(clippy::too_many_arguments)]
    fn leaf(
        &mut self,
        head: &Head,
        body: Cow<'_, [u8]>,
        path: &str,
        is_root: bool,
        parent: Option<Multi>,
        depth: usize,
        encoded: usize,
        pending: &mut Vec<Nested>,
    ) {
        // The ciphertext and control parts of a multipart/encrypted, recorded with it.
        if parent == Some(Multi::Encrypted) {
            return;
        }
        if head.is_message() {
            // Transfer-encoded (the other kind is a container): walked later from its own
            // buffer.
            if !is_root {
                self.count_attachment();
            }
            if !self.deeper(depth) {
                return;
            }
            if encoded >= MAX_ENCODED_MESSAGES {
                note(&mut self.found.unreadable, head.label(path));
            } else if !body.is_empty() {
                pending.push(Nested {
                    bytes: body.into_owned(),
                    depth: depth + 1,
                    encoded: encoded + 1,
                    prefix: path.to_string(),
                });
            }
            return;
        }
        let is_attachment = !is_root
            && head.ctype != "multipart"
            && !(parent == Some(Multi::Signed) && head.is_signature())
            && (head.disposition_attachment || head.filename.is_some() || head.ctype != "text");
        if is_attachment {
            self.count_attachment();
        }
        if self.found.violation.is_some() {
            return;
        }
        let label = head.label(path);
        if head.is_encrypted() || pgp_armored(head, &body) {
            note(&mut self.found.encrypted, label);
        } else if body.starts_with(b"PK\x03\x04")
            || body.starts_with(b"PK\x05\x06")
            || head.named_zip()
        {
            self.archive(label, &body);
        }
    }

    fn archive(&mut self, label: String, bytes: &[u8]) {
        if !self.may_take_long() {
            return;
        }
        let mut info = ArchiveInfo {
            filename: label.clone(),
            files: 0,
            depth: 0,
            declared_size: 0,
            encrypted_entries: 0,
        };
        self.zip_level(&mut info, &label, bytes, 1);
        self.found.archives.push(info);
    }

    /// One zip, at `depth` (1 = the attachment), and the zips inside it.
    fn zip_level(&mut self, info: &mut ArchiveInfo, path: &str, bytes: &[u8], depth: usize) {
        info.depth = info.depth.max(depth);
        let max_files = self.cfg.max_archive_files;
        let declared_entries = declared_entries(bytes);
        if declared_entries > MAX_ZIP_ENTRIES {
            info.files = info
                .files
                .saturating_add(usize::try_from(declared_entries).unwrap_or(usize::MAX));
            let v = Violation::TooManyArchiveFiles {
                archive: info.filename.clone(),
                found: info.files,
                max: max_files,
            };
            self.refuse(v, true);
            return;
        }
        let Ok(mut zip) = ZipArchive::new(Cursor::new(bytes)) else {
            note(&mut self.found.unreadable, path.to_string());
            return;
        };
        let document = is_document(&zip);

        let mut level_declared = 0u64;
        let mut candidates = Vec::new();
        for i in 0..zip.len() {
            let Ok(entry) = zip.by_index_data(i) else {
                continue;
            };
            if entry.is_dir() {
                continue;
            }
            let name = String::from_utf8_lossy(entry.name_raw()).into_owned();
            level_declared = level_declared.saturating_add(entry.size());
            if !document {
                info.files += 1;
            }
            if entry.encrypted() {
                info.encrypted_entries += 1;
                note(&mut self.found.encrypted, format!("{path}/{name}"));
                continue;
            }
            candidates.push((i, name, entry.size(), entry.compressed_size()));
        }
        if !document && zip.has_duplicate_names() {
            let raw = central_records(bytes, zip.central_directory_start());
            info.files += raw.saturating_sub(zip.len());
        }
        info.declared_size = info.declared_size.saturating_add(level_declared);
        self.expanded = self.expanded.saturating_add(level_declared);

        if info.files > max_files {
            let v = Violation::TooManyArchiveFiles {
                archive: info.filename.clone(),
                found: info.files,
                max: max_files,
            };
            self.refuse(v, true);
            return;
        }
        let compressed = bytes.len() as u64;
        if self.is_bomb(level_declared, compressed) || self.expanded > self.cfg.max_expanded_size {
            let declared = if self.expanded > self.cfg.max_expanded_size {
                self.expanded
            } else {
                level_declared
            };
            let v = Violation::ArchiveBomb {
                archive: path.to_string(),
                declared,
                compressed,
            };
            self.refuse(v, true);
            return;
        }

        for (i, name, size, compressed) in candidates {
            if self.halted {
                return;
            }
            let entry_path = format!("{path}/{name}");
            let named_zip = name.to_ascii_lowercase().ends_with(".zip");
            match first_bytes(&mut zip, i) {
                Some(head)
                    if head.starts_with(b"PK\x03\x04") || head.starts_with(b"PK\x05\x06") => {}
                Some(_) if named_zip => {}
                Some(_) => continue,
                // An unknown compression method or a broken local header: it might hide
                // anything.
                None => {
                    note(&mut self.found.unreadable, entry_path);
                    continue;
                }
            }
            if depth + 1 > self.cfg.max_archive_depth {
                let v = Violation::ArchiveTooDeep {
                    archive: info.filename.clone(),
                    max: self.cfg.max_archive_depth,
                };
                self.refuse(v, true);
                return;
            }
            // Its declared size is already within max_expanded_size; check its own ratio
            // before decompressing it, and never decompress more than it declares.
            if self.is_bomb(size, compressed) {
                let v = Violation::ArchiveBomb {
                    archive: entry_path,
                    declared: size,
                    compressed,
                };
                self.refuse(v, true);
                return;
            }
            match read_entry(&mut zip, i, size) {
                Some(inner) => self.zip_level(info, &entry_path, &inner, depth + 1),
                None => note(&mut self.found.unreadable, entry_path),
            }
        }
    }

    fn is_bomb(&self, declared: u64, compressed: u64) -> bool {
        declared > RATIO_FLOOR
            && declared
                > compressed
                    .max(1)
                    .saturating_mul(self.cfg.max_expansion_ratio)
    }
}

/// A leaf's body, transfer-decoded, and whether it ended properly (at its boundary, or at the
/// end when there is none). Undecodable content is taken as it is (base64 leniently decoded),
/// as mail-parser does.
fn leaf_body<'x>(
    stream: &mut MessageStream<'x>,
    data: &'x [u8],
    body_start: usize,
    boundary: Option<&[u8]>,
    cte: Cte,
) -> (Cow<'x, [u8]>, bool) {
    let b = boundary.unwrap_or(b"");
    let (end, bytes) = match cte {
        Cte::Base64 => stream.decode_base64_mime(b),
        Cte::QuotedPrintable => stream.decode_quoted_printable_mime(b),
        Cte::Identity => stream.mime_part(b),
    };
    if end != usize::MAX {
        return (bytes, true);
    }
    // The decoders put the stream back at the body's start.
    let (end, found) = stream.seek_part_end(boundary);
    let raw = data
        .get(body_start..end.max(body_start))
        .unwrap_or_default();
    let body = match cte {
        Cte::Base64 => Cow::Owned(lenient_base64(raw)),
        _ => Cow::Borrowed(raw),
    };
    (body, found)
}

/// Base64 as mail clients read it: whatever is not in the alphabet is skipped.
fn lenient_base64(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0u32);
    for &c in raw {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' => 62,
            b'/' => 63,
            _ => continue,
        };
        acc = (acc << 6) | u32::from(v);
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

const PGP_ARMOR: &[u8] = b"-----BEGIN PGP MESSAGE-----";

/// Inline PGP: anywhere in a text part; at the start of any other part (an `.asc` file).
fn pgp_armored(head: &Head, body: &[u8]) -> bool {
    if head.ctype == "text" {
        memchr::memmem::find(body, PGP_ARMOR).is_some()
    } else {
        body.trim_ascii_start().starts_with(PGP_ARMOR)
    }
}

// ---------------------------------------------------------------------------------------------
// Header blocks.

/// The three MIME fields of a header block, raw (the last of each, as mail-parser picks).
#[derive(Default)]
struct MimeFields<'x> {
    content_type: Option<&'x [u8]>,
    disposition: Option<&'x [u8]>,
    encoding: Option<&'x [u8]>,
    /// The most RFC 2231 sections (`*`) in any one `Content-Type` or `Content-Disposition`
    /// field of the block, every occurrence counted.
    most_sections: usize,
}

/// Scans the header block at `pos` the way mail-parser's `parse_headers` reads it: a field runs
/// to a line end not followed by a space or tab, a name to its colon (whitespace inside it
/// ignored), and a line holding only whitespace ends the block. Returns the MIME fields and
/// where the body starts, `None` if the data ends inside the block.
fn scan_header_block(data: &[u8], mut pos: usize) -> (MimeFields<'_>, Option<usize>) {
    let mut fields = MimeFields::default();
    'fields: loop {
        // A line start: skip whitespace; an empty line ends the block.
        loop {
            match data.get(pos) {
                None => return (fields, None),
                Some(b'\n') => return (fields, Some(pos + 1)),
                Some(c) if c.is_ascii_whitespace() => pos += 1,
                Some(_) => break,
            }
        }
        // The name, up to a colon that follows at least one name character.
        let mut name = [0u8; 32];
        let mut len = 0usize;
        loop {
            match data.get(pos) {
                None => return (fields, None),
                Some(b':') if len > 0 => {
                    pos += 1;
                    break;
                }
                Some(b'\n') => {
                    pos += 1;
                    continue 'fields;
                }
                Some(c) => {
                    if !c.is_ascii_whitespace() {
                        if let Some(slot) = name.get_mut(len) {
                            *slot = c.to_ascii_lowercase();
                        }
                        len += 1;
                    }
                    pos += 1;
                }
            }
        }
        // The value, with its folded lines.
        let start = pos;
        let end = loop {
            match data[pos..].iter().position(|&c| c == b'\n') {
                None => {
                    pos = data.len();
                    break data.len();
                }
                Some(i) => {
                    pos += i + 1;
                    if !matches!(data.get(pos), Some(b' ' | b'\t')) {
                        break pos;
                    }
                }
            }
        };
        let value = &data[start..end];
        let sections = || value.iter().filter(|&&c| c == b'*').count();
        match name.get(..len) {
            Some(b"content-type") => {
                fields.content_type = Some(value);
                fields.most_sections = fields.most_sections.max(sections());
            }
            Some(b"content-disposition") => {
                fields.disposition = Some(value);
                fields.most_sections = fields.most_sections.max(sections());
            }
            Some(b"content-transfer-encoding") => fields.encoding = Some(value),
            _ => {}
        }
    }
}

/// A `Content-Type` or `Content-Disposition` value parsed by mail-parser, with the attributes
/// the walk uses.
struct Parsed {
    ctype: String,
    subtype: Option<String>,
    attributes: Vec<(String, String)>,
}

impl Parsed {
    fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// mail-parser's field parser on a bounded copy: RFC 2231 continuations cost it quadratic time,
/// so at most [`PARAM_LIMIT`] parameters and [`FIELD_LIMIT`] octets go in.
fn parse_field(value: &[u8]) -> Option<Parsed> {
    let mut value = &value[..value.len().min(FIELD_LIMIT)];
    if let Some(cut) = value
        .iter()
        .enumerate()
        .filter(|&(_, &c)| c == b';')
        .nth(PARAM_LIMIT)
        .map(|(i, _)| i)
    {
        value = &value[..cut];
    }
    let mut buf = value.trim_ascii_end().to_vec();
    buf.push(b'\n');
    match MessageStream::new(&buf).parse_content_type() {
        HeaderValue::ContentType(ct) => Some(Parsed {
            ctype: ct.c_type.to_ascii_lowercase(),
            subtype: ct.c_subtype.map(|s| s.to_ascii_lowercase()),
            attributes: ct
                .attributes
                .unwrap_or_default()
                .into_iter()
                .filter(|a| matches!(a.name.as_ref(), "boundary" | "name" | "filename"))
                .map(|a| (a.name.into_owned(), a.value.into_owned()))
                .collect(),
        }),
        _ => None,
    }
}

impl MimeFields<'_> {
    fn head(&self, in_digest: bool) -> Head {
        let ct = self.content_type.and_then(parse_field);
        let cd = self.disposition.and_then(parse_field);
        let (ctype, subtype) = match &ct {
            Some(ct) => (ct.ctype.clone(), ct.subtype.clone().unwrap_or_default()),
            None if in_digest => ("message".to_string(), "rfc822".to_string()),
            None => ("text".to_string(), "plain".to_string()),
        };
        let cte = match self.encoding.map(|v| v.trim_ascii()) {
            Some(v) if v.eq_ignore_ascii_case(b"base64") => Cte::Base64,
            Some(v) if v.eq_ignore_ascii_case(b"quoted-printable") => Cte::QuotedPrintable,
            _ => Cte::Identity,
        };
        let filename = cd
            .as_ref()
            .and_then(|cd| cd.attribute("filename"))
            .or_else(|| ct.as_ref().and_then(|ct| ct.attribute("name")))
            .map(str::to_string);
        Head {
            boundary: ct
                .as_ref()
                .filter(|_| ctype == "multipart")
                .and_then(|ct| ct.attribute("boundary"))
                .map(str::to_string),
            ctype,
            subtype,
            filename,
            disposition_attachment: cd.as_ref().is_some_and(|cd| cd.ctype == "attachment"),
            cte,
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Zip.

/// The most entries any End Of Central Directory record in `bytes` declares: every candidate
/// the zip crate may settle on, Zip64 records included when a classic record points to one.
fn declared_entries(bytes: &[u8]) -> u64 {
    const EOCD: &[u8] = b"PK\x05\x06";
    const EOCD64: &[u8] = b"PK\x06\x06";
    let u16_at = |p: usize| {
        bytes
            .get(p..p + 2)
            .map_or(0, |b| u64::from(u16::from_le_bytes([b[0], b[1]])))
    };
    let u32_at = |p: usize| {
        bytes.get(p..p + 4).map_or(0, |b| {
            u64::from(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        })
    };
    let u64_at = |p: usize| {
        bytes
            .get(p..p + 8)
            .map_or(0, |b| u64::from_le_bytes(b.try_into().unwrap_or_default()))
    };
    // The record is 22 octets and may be followed by a comment of up to 64 KiB.
    let from = bytes.len().saturating_sub(22 + 4 + (1 << 16));
    let mut most = 0u64;
    let mut zip64 = false;
    for p in from..bytes.len().saturating_sub(3) {
        if &bytes[p..p + 4] == EOCD {
            most = most.max(u16_at(p + 8)).max(u16_at(p + 10));
            zip64 |= u16_at(p + 8) == 0xFFFF
                || u16_at(p + 10) == 0xFFFF
                || u32_at(p + 12) == 0xFFFF_FFFF
                || u32_at(p + 16) == 0xFFFF_FFFF;
        }
    }
    if zip64 {
        for p in 0..bytes.len().saturating_sub(3) {
            if &bytes[p..p + 4] == EOCD64 {
                most = most.max(u64_at(p + 24)).max(u64_at(p + 32));
            }
        }
    }
    most
}

/// Central directory headers from `start`, duplicates included.
fn central_records(bytes: &[u8], start: u64) -> usize {
    let Ok(mut p) = usize::try_from(start) else {
        return 0;
    };
    let mut n = 0usize;
    while (n as u64) < MAX_ZIP_ENTRIES && bytes.get(p..p + 4) == Some(b"PK\x01\x02") {
        let len = |at: usize| {
            bytes
                .get(at..at + 2)
                .map_or(0, |b| usize::from(u16::from_le_bytes([b[0], b[1]])))
        };
        p += 46 + len(p + 28) + len(p + 30) + len(p + 32);
        n += 1;
    }
    n
}

/// Office Open XML and OpenDocument/EPUB files: zips whose members are a document's parts.
fn is_document<R: Read + std::io::Seek>(zip: &ZipArchive<R>) -> bool {
    zip.index_for_name("[Content_Types].xml").is_some()
        || zip
            .by_index_data(0)
            .is_ok_and(|e| e.name_raw() == b"mimetype")
}

/// The first four decompressed octets of an entry; `None` if it cannot be opened (an unknown
/// compression method, a broken local header).
fn first_bytes<R: Read + std::io::Seek>(zip: &mut ZipArchive<R>, i: usize) -> Option<Vec<u8>> {
    let entry = zip.by_index(i).ok()?;
    let mut head = Vec::with_capacity(4);
    entry.take(4).read_to_end(&mut head).ok()?;
    Some(head)
}

/// An entry decompressed in memory, never more than its declared size.
fn read_entry<R: Read + std::io::Seek>(
    zip: &mut ZipArchive<R>,
    i: usize,
    size: u64,
) -> Option<Vec<u8>> {
    let entry = zip.by_index(i).ok()?;
    let mut out = Vec::with_capacity(usize::try_from(size.min(1 << 20)).unwrap_or(0));
    entry.take(size).read_to_end(&mut out).ok()?;
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::time::{Duration, Instant};
    use zip::write::SimpleFileOptions;
    use zip::{AesMode, CompressionMethod, ZipWriter};

    // -----------------------------------------------------------------------------------------
    // Building messages.

    fn b64(data: &[u8]) -> String {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut s = String::with_capacity(data.len() / 3 * 4 + data.len() / 57 * 2 + 8);
        for (i, c) in data.chunks(3).enumerate() {
            if i > 0 && i % 19 == 0 {
                s.push_str("\r\n");
            }
            let n = u32::from(c[0]) << 16
                | u32::from(*c.get(1).unwrap_or(&0)) << 8
                | u32::from(*c.get(2).unwrap_or(&0));
            for k in 0..4 {
                if k <= c.len() {
                    s.push(T[(n >> (18 - 6 * k) & 63) as usize] as char);
                } else {
                    s.push('=');
                }
            }
        }
        s
    }

    /// A message: a few headers, then `body` (which starts with its own MIME header lines).
    fn message(body: &str) -> Vec<u8> {
        format!(
            "From: a@example.test\r\nTo: b@example.test\r\nSubject: test\r\n\
             MIME-Version: 1.0\r\n{body}"
        )
        .into_bytes()
    }

    fn multipart(subtype: &str, boundary: &str, parts: &[String]) -> String {
        let mut s = format!(
            "Content-Type: multipart/{subtype}; boundary=\"{boundary}\"\r\n\r\n\
             preamble\r\n"
        );
        for p in parts {
            s.push_str(&format!("--{boundary}\r\n{p}\r\n"));
        }
        s.push_str(&format!("--{boundary}--\r\n"));
        s
    }

    fn text(body: &str) -> String {
        format!("Content-Type: text/plain; charset=utf-8\r\n\r\n{body}")
    }

    fn html(body: &str) -> String {
        format!("Content-Type: text/html; charset=utf-8\r\n\r\n{body}")
    }

    /// A base64 attachment with a disposition and a name.
    fn file(name: &str, ctype: &str, data: &[u8]) -> String {
        format!(
            "Content-Type: {ctype}; name=\"{name}\"\r\nContent-Disposition: attachment; \
             filename=\"{name}\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            b64(data)
        )
    }

    /// A text body followed by `atts` in a multipart/mixed.
    fn mixed(atts: &[String]) -> Vec<u8> {
        let mut parts = vec![text("hello")];
        parts.extend_from_slice(atts);
        message(&multipart("mixed", "b-mixed", &parts))
    }

    fn files(n: usize) -> Vec<String> {
        (0..n)
            .map(|i| file(&format!("f{i}.pdf"), "application/pdf", b"%PDF-1.4 x"))
            .collect()
    }

    // -----------------------------------------------------------------------------------------
    // Building zips.

    fn deflated() -> SimpleFileOptions {
        SimpleFileOptions::default().compression_method(CompressionMethod::Deflated)
    }

    fn stored() -> SimpleFileOptions {
        SimpleFileOptions::default().compression_method(CompressionMethod::Stored)
    }

    /// A zip of `entries`; a name ending in `/` is a directory.
    fn zip_with(entries: &[(&str, &[u8])], options: SimpleFileOptions) -> Vec<u8> {
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        for (name, data) in entries {
            if name.ends_with('/') {
                w.add_directory(*name, options).unwrap();
            } else {
                w.start_file(*name, options).unwrap();
                w.write_all(data).unwrap();
            }
        }
        w.finish().unwrap().into_inner()
    }

    fn zip_of(entries: &[(&str, &[u8])]) -> Vec<u8> {
        zip_with(entries, deflated())
    }

    /// `n` entries named `{prefix}0{suffix}`, `{prefix}1{suffix}`, … all holding `data`, in a zip.
    fn zip_many(
        n: usize,
        prefix: &str,
        suffix: &str,
        data: &[u8],
        o: SimpleFileOptions,
    ) -> Vec<u8> {
        let names: Vec<String> = (0..n).map(|i| format!("{prefix}{i}{suffix}")).collect();
        let entries: Vec<(&str, &[u8])> = names.iter().map(|n| (n.as_str(), data)).collect();
        zip_with(&entries, o)
    }

    /// A zip of `n` small files, `f0.txt`, `f1.txt`, …
    fn zip_n(n: usize) -> Vec<u8> {
        zip_many(n, "f", ".txt", b"x", deflated())
    }

    /// Zips inside zips: `levels` zips, the innermost holding `inner.txt`.
    fn nested(levels: usize) -> Vec<u8> {
        let mut z = zip_of(&[("inner.txt", b"deepest")]);
        for level in 1..levels {
            z = zip_with(&[(&format!("level{level}.zip"), &z)], stored());
        }
        z
    }

    /// Rewrites the central directory (and local headers) so that every entry declares `size`
    /// uncompressed octets: a bomb that would take gigabytes to unpack, made in microseconds.
    fn declare_size(mut z: Vec<u8>, size: u32) -> Vec<u8> {
        for p in 0..z.len().saturating_sub(30) {
            match &z[p..p + 4] {
                b"PK\x01\x02" => z[p + 24..p + 28].copy_from_slice(&size.to_le_bytes()),
                b"PK\x03\x04" => z[p + 22..p + 26].copy_from_slice(&size.to_le_bytes()),
                _ => {}
            }
        }
        z
    }

    /// Sets the encryption flag (general purpose bit 0) on every entry, as ZipCrypto does.
    fn flag_encrypted(mut z: Vec<u8>) -> Vec<u8> {
        for p in 0..z.len().saturating_sub(10) {
            match &z[p..p + 4] {
                b"PK\x01\x02" => z[p + 8] |= 1,
                b"PK\x03\x04" => z[p + 6] |= 1,
                _ => {}
            }
        }
        z
    }

    /// Renames the entry `from` to `to` (same length) everywhere in the archive.
    fn rename(mut z: Vec<u8>, from: &[u8], to: &[u8]) -> Vec<u8> {
        assert_eq!(from.len(), to.len());
        let mut p = 0;
        while p + from.len() <= z.len() {
            if &z[p..p + from.len()] == from {
                z[p..p + from.len()].copy_from_slice(to);
            }
            p += 1;
        }
        z
    }

    /// What the stage skips for a plain text part is what inspecting it would find: nothing.
    #[test]
    fn plain_text_has_nothing_to_inspect() {
        for raw in crate::message::PLAIN_SAMPLES {
            let found = inspect(raw, &cfg());
            assert_eq!(found.attachments, 0);
            assert!(found.archives.is_empty() && found.encrypted.is_empty());
            assert!(found.unreadable.is_empty() && found.violation.is_none());
        }
    }

    fn cfg() -> LimitsConfig {
        LimitsConfig::default()
    }

    /// `inspect` with a hang guard: generous, it catches loops and quadratic blow-ups, not
    /// slowness.
    fn timed(what: &str, raw: &[u8], cfg: &LimitsConfig) -> Inspection {
        let start = Instant::now();
        let found = inspect(raw, cfg);
        let took = start.elapsed();
        if std::env::var_os("LIMITS_TIMES").is_some() {
            eprintln!("{took:>12.3?}  {what}");
        }
        assert!(took < Duration::from_secs(5), "{what}: {took:?}");
        found
    }

    fn run(raw: &[u8]) -> Inspection {
        timed("run", raw, &cfg())
    }

    // -----------------------------------------------------------------------------------------
    // Configuration and replies.

    #[test]
    fn config_defaults_and_unknown_keys() {
        let c: LimitsConfig = toml::from_str("").unwrap();
        assert_eq!(c.max_attachments, 50);
        assert_eq!(c.max_archive_files, 32);
        assert_eq!(c.max_archive_depth, 3);
        assert_eq!(c.max_expansion_ratio, 100);
        assert_eq!(c.max_expanded_size, 500 * 1024 * 1024);
        assert_eq!(c.max_mime_depth, 20);
        assert_eq!(c.max_parts, 1000);
        let c: LimitsConfig = toml::from_str("max_attachments = 10\nmax_parts = 5").unwrap();
        assert_eq!(
            (c.max_attachments, c.max_parts, c.max_archive_files),
            (10, 5, 32)
        );
        let err = toml::from_str::<LimitsConfig>("max_attachment = 10").unwrap_err();
        assert!(err.to_string().contains("unknown field"), "{err}");
    }

    #[test]
    fn violation_codes_and_texts() {
        let table = [
            (
                Violation::TooManyAttachments { found: 51, max: 50 },
                (552, "5.3.4"),
                "message refused: 51 attachments, the limit is 50",
            ),
            (
                Violation::TooManyArchiveFiles {
                    archive: "a.zip".into(),
                    found: 33,
                    max: 32,
                },
                (552, "5.3.4"),
                "message refused: 33 files in compressed attachment a.zip, the limit is 32",
            ),
            (
                Violation::TooManyParts { max: 1000 },
                (552, "5.3.4"),
                "message refused: more than 1000 MIME parts",
            ),
            (
                Violation::MimeTooDeep { max: 20 },
                (554, "5.6.0"),
                "message refused: MIME parts nested more than 20 deep",
            ),
            (
                Violation::ArchiveTooDeep {
                    archive: "deep.zip".into(),
                    max: 3,
                },
                (554, "5.6.0"),
                "message refused: archives nested more than 3 deep in deep.zip",
            ),
            (
                Violation::TooManyParameterSections { max: 64 },
                (554, "5.6.0"),
                "message refused: a MIME field split into more than 64 parameter sections",
            ),
            (
                Violation::UnusedBoundaries { found: 9 },
                (554, "5.6.0"),
                "message refused: 9 multipart boundaries declared but never used",
            ),
            (
                Violation::ArchiveBomb {
                    archive: "42.zip".into(),
                    declared: 4_294_967_295,
                    compressed: 42_374,
                },
                (554, "5.7.0"),
                "message refused: archive 42.zip declares 4294967295 octets uncompressed from \
                 42374, a likely archive bomb",
            ),
        ];
        for (v, code, text) in table {
            assert_eq!(v.code(), code, "{v:?}");
            assert_eq!(v.text(), text);
        }
        // A name from the message cannot break the reply line or run on.
        let v = Violation::ArchiveTooDeep {
            archive: format!("evil\r\n250 ok{}", "x".repeat(200)),
            max: 3,
        };
        let t = v.text();
        assert!(
            t.is_ascii() && !t.contains('\r') && !t.contains('\n'),
            "{t}"
        );
        assert!(
            t.contains("deep in evil??250 okxxx") && t.ends_with("..."),
            "{t}"
        );
        assert!(t.len() < 150, "{t}");
    }

    #[test]
    fn verdicts() {
        let stage = "limits";
        let refused = verdict(stage, &run(&mixed(&files(51))));
        match &refused.action {
            Action::Reject(r) => {
                assert_eq!((r.code, r.enhanced), (552, "5.3.4"));
                assert_eq!(r.text, "message refused: 51 attachments, the limit is 50");
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(refused.detail["attachments"], 51);

        let aes = zip_with(
            &[("a.txt", b"secret")],
            deflated().with_aes_encryption(AesMode::Aes256, "pw"),
        );
        let noted = verdict(
            stage,
            &run(&mixed(&[file("s.zip", "application/zip", &aes)])),
        );
        assert_eq!(noted.action, Action::Continue);
        assert_eq!(noted.reason, "unscanned: encrypted: s.zip/a.txt");
        assert!(noted.is_noteworthy());
        assert_eq!(noted.detail["archives"][0]["encrypted_entries"], 1);

        let clean = verdict(stage, &run(&mixed(&files(2))));
        assert_eq!(clean.action, Action::Continue);
        assert!(!clean.is_noteworthy());
    }

    // -----------------------------------------------------------------------------------------
    // Attachments.

    #[test]
    fn what_counts_as_an_attachment() {
        let attached_message = |inner: &[u8]| {
            format!(
                "Content-Type: message/rfc822\r\nContent-Disposition: attachment\r\n\r\n{}",
                String::from_utf8_lossy(inner)
            )
        };
        let attached_b64 = |inner: &[u8]| {
            format!(
                "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                b64(inner)
            )
        };
        let forwarded = mixed(&files(2));
        let table: Vec<(&str, Vec<u8>, usize)> = vec![
            ("plain text", message(&text("hi")), 0),
            ("no MIME at all", b"Subject: x\r\n\r\nhello\r\n".to_vec(), 0),
            (
                "alternative text and html",
                message(&multipart(
                    "alternative",
                    "alt",
                    &[text("hi"), html("<p>hi</p>")],
                )),
                0,
            ),
            ("three attachments", mixed(&files(3)), 3),
            (
                "alternative inside mixed, one file",
                message(&multipart(
                    "mixed",
                    "m",
                    &[
                        multipart("alternative", "alt", &[text("hi"), html("<p>hi</p>")]),
                        file("a.pdf", "application/pdf", b"%PDF"),
                    ],
                )),
                1,
            ),
            (
                "inline image with a file name",
                mixed(&[
                    "Content-Type: image/png; name=\"logo.png\"\r\nContent-Disposition: \
                         inline; filename=\"logo.png\"\r\n\r\nPNG"
                        .into(),
                ]),
                1,
            ),
            (
                "nameless non-text part",
                mixed(&["Content-Type: application/octet-stream\r\n\r\nxx".into()]),
                1,
            ),
            (
                "text part with attachment disposition",
                mixed(&[
                    "Content-Type: text/plain\r\nContent-Disposition: attachment\r\n\r\n\
                         notes"
                        .into(),
                ]),
                1,
            ),
            (
                "second nameless text part is body",
                mixed(&[text("footer")]),
                0,
            ),
            (
                "attached message and its two files",
                mixed(&[attached_message(&forwarded)]),
                3,
            ),
            (
                "base64 attached message and its two files",
                mixed(&[attached_b64(&forwarded)]),
                3,
            ),
            (
                "a single-part message is its body, whatever its type",
                message("Content-Type: application/pdf; name=\"a.pdf\"\r\n\r\n%PDF"),
                0,
            ),
            (
                "signed: the signature is not an attachment",
                message(&multipart(
                    "signed",
                    "sig",
                    &[
                        text("signed words"),
                        "Content-Type: application/pgp-signature; name=\"signature.asc\"\r\n\r\n\
                         -----BEGIN PGP SIGNATURE-----"
                            .into(),
                    ],
                )),
                0,
            ),
            (
                "signed mixed with one file",
                message(&multipart(
                    "signed",
                    "sig",
                    &[
                        multipart(
                            "mixed",
                            "in",
                            &[text("x"), file("a.pdf", "application/pdf", b"%")],
                        ),
                        "Content-Type: application/pkcs7-signature; name=\"smime.p7s\"\r\n\r\nxx"
                            .into(),
                    ],
                )),
                1,
            ),
            (
                "digest of two messages",
                message(&multipart(
                    "digest",
                    "dig",
                    &[
                        "\r\nSubject: one\r\n\r\nfirst".into(),
                        "\r\nSubject: two\r\n\r\nsecond".into(),
                    ],
                )),
                2,
            ),
        ];
        for (what, raw, attachments) in table {
            let found = run(&raw);
            assert_eq!(found.attachments, attachments, "{what}");
            assert_eq!(found.violation, None, "{what}");
        }
    }

    #[test]
    fn attachment_limit() {
        for (n, violation) in [
            (50, None),
            (
                51,
                Some(Violation::TooManyAttachments { found: 51, max: 50 }),
            ),
            (
                60,
                Some(Violation::TooManyAttachments { found: 60, max: 50 }),
            ),
        ] {
            let found = run(&mixed(&files(n)));
            assert_eq!(found.attachments, n);
            assert_eq!(found.violation, violation, "{n}");
        }
        // Hiding files in a forwarded message does not get round the limit.
        let inner = mixed(&files(50));
        let outer = mixed(&[format!(
            "Content-Type: message/rfc822\r\n\r\n{}",
            String::from_utf8_lossy(&inner)
        )]);
        assert_eq!(
            run(&outer).violation,
            Some(Violation::TooManyAttachments { found: 51, max: 50 })
        );
    }

    #[test]
    fn bare_lf_line_ends() {
        let crlf = mixed(&files(3));
        let lf: Vec<u8> = crlf.iter().copied().filter(|&c| c != b'\r').collect();
        assert_eq!(run(&lf).attachments, 3);
    }

    // -----------------------------------------------------------------------------------------
    // Archives.

    #[test]
    #[allow(clippy::type_complexity)]
    fn archive_file_counts() {
        let with_dirs = zip_of(&[
            ("docs/", b""),
            ("docs/a/", b""),
            ("docs/a/1.txt", b"1"),
            ("docs/b/", b""),
            ("docs/b/2.txt", b"2"),
        ]);
        // `n` files and a zip of `m` files.
        let outer = |n: usize, m: usize| {
            let inner = zip_n(m);
            let names: Vec<String> = (0..n).map(|i| format!("o{i}.txt")).collect();
            let mut entries: Vec<(&str, &[u8])> =
                names.iter().map(|n| (n.as_str(), &b"o"[..])).collect();
            entries.push(("inner.zip", &inner));
            zip_of(&entries)
        };
        let too_many = |found| {
            Some(Violation::TooManyArchiveFiles {
                archive: "a.zip".into(),
                found,
                max: 32,
            })
        };
        // (what, zip, files, depth, violation)
        let table: Vec<(&str, Vec<u8>, usize, usize, Option<Violation>)> = vec![
            ("32 files", zip_n(32), 32, 1, None),
            ("33 files", zip_n(33), 33, 1, too_many(33)),
            ("directories do not count", with_dirs, 2, 1, None),
            ("an empty zip", zip_n(0), 0, 1, None),
            // 10 files, inner.zip itself, and its 10 files.
            (
                "nested counted inside the parent",
                outer(10, 10),
                21,
                2,
                None,
            ),
            ("20 + 1 + 12 is 33", outer(20, 12), 33, 2, too_many(33)),
        ];
        for (what, z, files, depth, violation) in table {
            let found = run(&mixed(&[file("a.zip", "application/zip", &z)]));
            assert_eq!(found.archives.len(), 1, "{what}");
            let a = &found.archives[0];
            assert_eq!(
                (a.filename.as_str(), a.files, a.depth),
                ("a.zip", files, depth),
                "{what}"
            );
            assert_eq!(found.violation, violation, "{what}");
            assert!(
                found.unreadable.is_empty(),
                "{what}: {:?}",
                found.unreadable
            );
        }
    }

    #[test]
    fn zips_found_by_magic_not_name() {
        // A zip disguised as a PDF is still a zip.
        let found = run(&mixed(&[file("report.pdf", "application/pdf", &zip_n(33))]));
        assert_eq!(found.archives[0].filename, "report.pdf");
        assert!(matches!(
            found.violation,
            Some(Violation::TooManyArchiveFiles { found: 33, .. })
        ));
        // Sent as text/plain, nameless and quoted-printable-free: the magic decides.
        let raw = message(&multipart(
            "mixed",
            "m",
            &[
                text("x"),
                format!(
                    "Content-Type: text/plain\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                    b64(&zip_n(2))
                ),
            ],
        ));
        let found = run(&raw);
        assert_eq!(found.archives.len(), 1);
        assert_eq!(
            (found.archives[0].filename.as_str(), found.archives[0].files),
            ("part 2", 2)
        );
        // A zip with bytes in front opens in unzip tools; its name makes us look.
        let mut prefixed = b"junk".to_vec();
        prefixed.extend_from_slice(&zip_n(33));
        let found = run(&mixed(&[file(
            "a.zip",
            "application/octet-stream",
            &prefixed,
        )]));
        assert!(matches!(
            found.violation,
            Some(Violation::TooManyArchiveFiles { found: 33, .. })
        ));
        // Not a zip at all, but named like one: recorded, not refused.
        let found = run(&mixed(&[file(
            "fake.zip",
            "application/zip",
            b"not a zip at all",
        )]));
        assert_eq!(found.violation, None);
        assert_eq!(found.unreadable, vec!["fake.zip"]);
        // Zip magic with a broken or missing central directory.
        let mut cut = zip_n(5);
        cut.truncate(cut.len() - 30);
        let found = run(&mixed(&[file("cut.bin", "application/octet-stream", &cut)]));
        assert_eq!(found.violation, None);
        assert_eq!(found.unreadable, vec!["cut.bin"]);
        // Other binaries are nobody's business here.
        let found = run(&mixed(&[file(
            "a.bin",
            "application/octet-stream",
            b"PK\x01 nope",
        )]));
        assert!(found.archives.is_empty() && found.unreadable.is_empty());
    }

    #[test]
    fn duplicate_names_are_counted() {
        // 33 entries, two of them called f31.txt: the zip crate folds them into one.
        let z = rename(zip_n(33), b"f32.txt", b"f31.txt");
        let found = run(&mixed(&[file("dup.zip", "application/zip", &z)]));
        assert!(
            matches!(
                found.violation,
                Some(Violation::TooManyArchiveFiles { found: 33, .. })
            ),
            "{found:?}"
        );
    }

    #[test]
    fn office_documents_are_not_archives_of_files() {
        let parts: Vec<String> = (0..60)
            .map(|i| format!("ppt/slides/slide{i}.xml"))
            .collect();
        let mut entries: Vec<(&str, &[u8])> = vec![("[Content_Types].xml", b"<Types/>")];
        entries.extend(parts.iter().map(|p| (p.as_str(), &b"<slide/>"[..])));
        let pptx = zip_of(&entries);
        let found = run(&mixed(&[file(
            "deck.pptx",
            "application/octet-stream",
            &pptx,
        )]));
        assert_eq!(found.violation, None);
        assert_eq!((found.archives[0].files, found.archives[0].depth), (0, 1));
        // OpenDocument: `mimetype` first.
        let mut entries: Vec<(&str, &[u8])> =
            vec![("mimetype", b"application/vnd.oasis.opendocument.text")];
        entries.extend(parts.iter().map(|p| (p.as_str(), &b"<p/>"[..])));
        let odt = zip_with(&entries, stored());
        assert_eq!(
            run(&mixed(&[file("a.odt", "application/octet-stream", &odt)])).violation,
            None
        );
        // A zip hidden in a document counts as usual: its 40 files (it is itself a member of
        // the document, which does not count).
        let big = zip_n(40);
        entries.push(("Object 1/payload.zip", &big));
        let odt = zip_with(&entries, stored());
        let found = run(&mixed(&[file("a.odt", "application/octet-stream", &odt)]));
        assert!(
            matches!(
                found.violation,
                Some(Violation::TooManyArchiveFiles { found: 40, .. })
            ),
            "{found:?}"
        );
    }

    #[test]
    fn archive_depth() {
        let deep = nested(20);
        let found = run(&mixed(&[file("deep.zip", "application/zip", &deep)]));
        assert_eq!(
            found.violation,
            Some(Violation::ArchiveTooDeep {
                archive: "deep.zip".into(),
                max: 3
            })
        );
        assert_eq!(found.archives[0].depth, 3);
        // Three levels are allowed; with a higher limit the 20 levels open.
        assert_eq!(
            run(&mixed(&[file("d.zip", "application/zip", &nested(3))])).violation,
            None
        );
        let found = run(&mixed(&[file("d.zip", "application/zip", &nested(4))]));
        assert!(matches!(
            found.violation,
            Some(Violation::ArchiveTooDeep { max: 3, .. })
        ));
        let deep_ok = LimitsConfig {
            max_archive_depth: 25,
            ..cfg()
        };
        let found = timed(
            "20 deep",
            &mixed(&[file("deep.zip", "application/zip", &deep)]),
            &deep_ok,
        );
        assert_eq!(found.violation, None);
        // 19 nested zips and the innermost file.
        assert_eq!((found.archives[0].depth, found.archives[0].files), (20, 20));
    }

    #[test]
    fn bombs() {
        // Declared sizes patched to 4 GB: refused from the central directory alone (decompressing
        // would fail the CRC, and take minutes).
        let z = declare_size(zip_of(&[("zeros.bin", &[0u8; 1000])]), u32::MAX);
        let found = run(&mixed(&[file("bomb.zip", "application/zip", &z)]));
        assert_eq!(
            found.violation,
            Some(Violation::ArchiveBomb {
                archive: "bomb.zip".into(),
                declared: u64::from(u32::MAX),
                compressed: z.len() as u64
            })
        );
        assert_eq!(found.violation.as_ref().unwrap().code(), (554, "5.7.0"));

        // A real one: 8 MiB of zeros deflate to a few kB.
        let zeros = vec![0u8; 8 << 20];
        let z = zip_of(&[("zeros.bin", &zeros)]);
        let found = run(&mixed(&[file("z.zip", "application/zip", &z)]));
        assert!(
            matches!(found.violation, Some(Violation::ArchiveBomb { declared, .. }) if declared == 8 << 20)
        );
        // Under the floor, no ratio is a bomb.
        let z = zip_of(&[("spaces.txt", &[b' '; 500_000])]);
        assert_eq!(
            run(&mixed(&[file("s.zip", "application/zip", &z)])).violation,
            None
        );

        // The nested entry's own ratio is checked before it is decompressed: 2 MiB of noise keep
        // the outer ratio low, the inner zip (1.5 MiB of zeros, stored) deflates 1000 to 1.
        let noise: Vec<u8> = (0..2u32 << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        let inner = zip_with(&[("zeros.bin", &vec![0u8; 3 << 19])], stored());
        let mut w = ZipWriter::new(Cursor::new(Vec::new()));
        w.start_file("noise.bin", stored()).unwrap();
        w.write_all(&noise).unwrap();
        w.start_file("inner.zip", deflated()).unwrap();
        w.write_all(&inner).unwrap();
        let outer = w.finish().unwrap().into_inner();
        let found = run(&mixed(&[file("o.zip", "application/zip", &outer)]));
        assert!(
            matches!(&found.violation, Some(Violation::ArchiveBomb { archive, declared, .. })
                if archive == "o.zip/inner.zip" && *declared == inner.len() as u64),
            "{found:?}"
        );

        // All archives of a message together.
        let small = LimitsConfig {
            max_expanded_size: 1500,
            ..cfg()
        };
        let z = zip_of(&[("a.txt", &[b'a'; 1000])]);
        let raw = mixed(&[
            file("1.zip", "application/zip", &z),
            file("2.zip", "application/zip", &z),
        ]);
        let found = timed("total", &raw, &small);
        assert_eq!(
            found.violation,
            Some(Violation::ArchiveBomb {
                archive: "2.zip".into(),
                declared: 2000,
                compressed: z.len() as u64
            })
        );
    }

    #[test]
    fn forty_two_like() {
        // 42.zip's shape: 16 zips in each of 4 levels, 16 files of 4 GB (declared) at the bottom.
        let mut z = declare_size(zip_many(16, "", ".bin", &[0; 64], deflated()), u32::MAX);
        for _ in 0..4 {
            z = zip_many(16, "lib ", ".zip", &z, deflated());
        }
        let raw = mixed(&[file("42.zip", "application/zip", &z)]);
        // Default limits: the files run out first (16 + 16 + 16 …).
        let found = timed("42 default", &raw, &cfg());
        assert!(
            matches!(found.violation, Some(Violation::TooManyArchiveFiles { .. })),
            "{found:?}"
        );
        // Without a file limit, the depth stops it; without that either, the declared sizes.
        let no_files = LimitsConfig {
            max_archive_files: usize::MAX,
            ..cfg()
        };
        let found = timed("42 depth", &raw, &no_files);
        assert!(
            matches!(
                found.violation,
                Some(Violation::ArchiveTooDeep { max: 3, .. })
            ),
            "{found:?}"
        );
        let open = LimitsConfig {
            max_archive_files: usize::MAX,
            max_archive_depth: 10,
            ..cfg()
        };
        let found = timed("42 open", &raw, &open);
        assert!(
            matches!(found.violation, Some(Violation::ArchiveBomb { .. })),
            "{found:?}"
        );
        assert!(found.archives[0].declared_size >= u64::from(u32::MAX));
    }

    // -----------------------------------------------------------------------------------------
    // Encryption.

    #[test]
    fn encrypted_content_is_recorded_not_refused() {
        let aes = zip_with(
            &[("a.txt", b"secret"), ("b.txt", b"secret too")],
            deflated().with_aes_encryption(AesMode::Aes256, "password"),
        );
        let zipcrypto = flag_encrypted(zip_of(&[("c.txt", b"old style")]));
        let inner_aes = zip_with(
            &[("deep.txt", b"x")],
            deflated().with_aes_encryption(AesMode::Aes128, "pw"),
        );
        let nested_aes = zip_with(&[("plain.txt", b"x"), ("in.zip", &inner_aes)], stored());
        let pgp_mime = multipart(
            "encrypted; protocol=\"application/pgp-encrypted\"",
            "enc",
            &[
                "Content-Type: application/pgp-encrypted\r\n\r\nVersion: 1".into(),
                "Content-Type: application/octet-stream; name=\"encrypted.asc\"\r\n\r\n\
                 -----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----"
                    .into(),
            ],
        );
        let table: Vec<(&str, Vec<u8>, Vec<&str>, usize)> = vec![
            (
                "AES zip",
                mixed(&[file("s.zip", "application/zip", &aes)]),
                vec!["s.zip/a.txt", "s.zip/b.txt"],
                1,
            ),
            (
                "ZipCrypto flag",
                mixed(&[file("c.zip", "application/zip", &zipcrypto)]),
                vec!["c.zip/c.txt"],
                1,
            ),
            (
                "AES zip inside a zip",
                mixed(&[file("n.zip", "application/zip", &nested_aes)]),
                vec!["n.zip/in.zip/deep.txt"],
                1,
            ),
            (
                "S/MIME message",
                message(
                    "Content-Type: application/pkcs7-mime; smime-type=enveloped-data; \
                     name=\"smime.p7m\"\r\nContent-Transfer-Encoding: base64\r\n\r\nMIAGCSqG\r\n",
                ),
                vec!["smime.p7m"],
                0,
            ),
            (
                "x-pkcs7-mime attachment",
                mixed(&["Content-Type: application/x-pkcs7-mime\r\n\r\nxx".into()]),
                vec!["part 2"],
                1,
            ),
            ("PGP/MIME", message(&pgp_mime), vec!["part 1"], 0),
            (
                "PGP/MIME attached",
                mixed(std::slice::from_ref(&pgp_mime)),
                vec!["part 2"],
                0,
            ),
            (
                "inline PGP",
                message(&text(
                    "Hi,\r\n-----BEGIN PGP MESSAGE-----\r\nhQEMA\r\n-----END PGP MESSAGE-----",
                )),
                vec!["part 1"],
                0,
            ),
            (
                "armored file",
                mixed(&[file(
                    "note.asc",
                    "application/octet-stream",
                    b"\n-----BEGIN PGP MESSAGE-----\nx",
                )]),
                vec!["note.asc"],
                1,
            ),
        ];
        for (what, raw, encrypted, attachments) in table {
            let found = run(&raw);
            assert_eq!(found.violation, None, "{what}");
            assert_eq!(found.encrypted, encrypted, "{what}");
            assert_eq!(found.attachments, attachments, "{what}");
        }
        let found = run(&mixed(&[file("s.zip", "application/zip", &aes)]));
        assert_eq!(
            (found.archives[0].files, found.archives[0].encrypted_entries),
            (2, 2)
        );
        // Encryption does not excuse the count.
        let many = zip_many(
            33,
            "e",
            "",
            b"x",
            deflated().with_aes_encryption(AesMode::Aes256, "pw"),
        );
        let found = run(&mixed(&[file("m.zip", "application/zip", &many)]));
        assert!(matches!(
            found.violation,
            Some(Violation::TooManyArchiveFiles { found: 33, .. })
        ));
    }

    // -----------------------------------------------------------------------------------------
    // MIME structure.

    /// `n` multiparts inside each other around one text part, each with its own boundary.
    fn nested_multiparts(n: usize, same_boundary: bool, closed: bool) -> Vec<u8> {
        let b = |i: usize| {
            if same_boundary {
                "b".to_string()
            } else {
                format!("b{i}")
            }
        };
        let mut s = String::new();
        for i in 0..n {
            s.push_str(&format!(
                "Content-Type: multipart/mixed; boundary=\"{}\"\r\n\r\n--{}\r\n",
                b(i),
                b(i)
            ));
        }
        s.push_str("Content-Type: text/plain\r\n\r\nhi\r\n");
        if closed {
            for i in (0..n).rev() {
                s.push_str(&format!("--{}--\r\n", b(i)));
            }
        }
        message(&s)
    }

    /// Attached messages inside each other, not encoded.
    fn nested_messages(n: usize) -> Vec<u8> {
        let mut s = "Content-Type: message/rfc822\r\n\r\n".repeat(n);
        s.push_str("Subject: x\r\n\r\nbody\r\n");
        message(&s)
    }

    #[test]
    fn mime_depth() {
        let too_deep = Some(Violation::MimeTooDeep { max: 20 });
        let table: Vec<(&str, Vec<u8>, Option<Violation>)> = vec![
            ("20 multiparts", nested_multiparts(20, false, true), None),
            (
                "21 multiparts",
                nested_multiparts(21, false, true),
                too_deep.clone(),
            ),
            ("20 attached messages", nested_messages(20), None),
            (
                "21 attached messages",
                nested_messages(21),
                too_deep.clone(),
            ),
        ];
        for (what, raw, violation) in table {
            assert_eq!(run(&raw).violation, violation, "{what}");
        }
        // Encoded attached messages count as levels too.
        let mut m = b"Subject: in\r\n\r\nbody\r\n".to_vec();
        for _ in 0..3 {
            m = format!(
                "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                b64(&m)
            )
            .into_bytes();
        }
        let two = LimitsConfig {
            max_mime_depth: 2,
            ..cfg()
        };
        assert_eq!(
            timed("encoded depth", &m, &two).violation,
            Some(Violation::MimeTooDeep { max: 2 })
        );
        assert_eq!(run(&m).violation, None);
    }

    #[test]
    fn part_limit() {
        let texts = |n: usize| (0..n).map(|i| text(&format!("t{i}"))).collect::<Vec<_>>();
        // The root multipart and 999 text parts: 1000 parts, no attachments.
        let found = run(&message(&multipart("mixed", "m", &texts(999))));
        assert_eq!((found.violation, found.attachments), (None, 0));
        let found = run(&message(&multipart("mixed", "m", &texts(1000))));
        assert_eq!(found.violation, Some(Violation::TooManyParts { max: 1000 }));
        assert_eq!(found.violation.unwrap().code(), (552, "5.3.4"));
    }

    #[test]
    fn parameter_sections() {
        // `n` RFC 2231 sections of a file name, one per folded line.
        let sections = |field: &str, n: usize| {
            let mut s = format!("{field}: application/octet-stream;");
            for i in 0..n {
                s.push_str(&format!("\r\n name*{i}*=utf-8''%41%42;"));
            }
            s.push_str("\r\n");
            s
        };
        let too_many = Some(Violation::TooManyParameterSections { max: 64 });
        let single = |head: String| message(&format!("{head}\r\nbody\r\n"));
        // Each section has two `*`: 32 sections are 64, 33 are 66.
        assert_eq!(run(&single(sections("Content-Type", 32))).violation, None);
        assert_eq!(
            run(&single(sections("Content-Type", 33))).violation,
            too_many
        );
        assert_eq!(
            run(&single(sections("Content-Disposition", 33))).violation,
            too_many
        );
        // A field that is not the last of its name counts too: mail-parser parses them all.
        let hidden = format!(
            "{}Content-Type: text/plain\r\n",
            sections("Content-Type", 1000)
        );
        assert_eq!(run(&single(hidden)).violation, too_many);
        // In a part's header block, and in an attached message encoded in base64.
        let part = format!("{}\r\nx", sections("Content-Disposition", 1000));
        assert_eq!(run(&mixed(&[part])).violation, too_many);
        let inner = single(sections("Content-Type", 1000));
        let attached = format!(
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            b64(&inner)
        );
        assert_eq!(run(&mixed(&[attached])).violation, too_many);
        // A long file name as mail clients split it passes.
        let name: String = "%E2%82%AC".repeat(80);
        let chunks: Vec<String> = name
            .as_bytes()
            .chunks(60)
            .enumerate()
            .map(|(i, c)| {
                let star = if i == 0 { "*=utf-8''" } else { "*=" };
                format!("filename*{i}{star}{}", std::str::from_utf8(c).unwrap())
            })
            .collect();
        let legit = format!(
            "Content-Disposition: attachment;\r\n {}\r\n\r\nx",
            chunks.join(";\r\n ")
        );
        assert_eq!(run(&mixed(&[legit])).violation, None);
        // 10 MB of sections: refused at once (mail-parser would take minutes).
        let mut huge = String::from("Content-Type: application/octet-stream;");
        let mut i = 0;
        while huge.len() < 10 << 20 {
            huge.push_str(&format!("\r\n name*{i}=aaaaaaaa; a{i}*{i}=x;"));
            i += 1;
        }
        let found = timed("10 MB of sections", &single(huge), &cfg());
        assert_eq!(found.violation, too_many);
        assert_eq!(found.violation.unwrap().code(), (554, "5.6.0"));
    }

    #[test]
    fn unused_boundaries() {
        // `n` multiparts whose boundary never comes, then a text part of `size` octets.
        let unused = |n: usize, size: usize| {
            let mut parts: Vec<String> = (0..n)
                .map(|i| format!("Content-Type: multipart/mixed; boundary=\"never-{i}\"\r\n\r\nx"))
                .collect();
            parts.push(text(&"a".repeat(size)));
            message(&multipart("mixed", "outer", &parts))
        };
        // A few are a broken message, not an attack.
        let found = run(&unused(3, 1 << 20));
        assert_eq!(found.violation, None);
        // Small messages stay under the floor: 900 of them in 55 kB read 24 MB in vain.
        assert_eq!(run(&unused(900, 1000)).violation, None);
        // Each one read to the end of 45 MB: refused once 8 times the message plus 64 MiB is
        // read in vain, here at the tenth. Without the bound this took over 30 s.
        let found = timed(
            "997 unused boundaries, 45 MB",
            &unused(997, 45 << 20),
            &cfg(),
        );
        assert_eq!(
            found.violation,
            Some(Violation::UnusedBoundaries { found: 10 })
        );
        assert_eq!(found.violation.unwrap().code(), (554, "5.6.0"));
        // A boundary too long to follow, or one the walk does not read, counts the same: the
        // virus stage's parser still looks for it.
        let long = |n: usize| {
            let mut parts: Vec<String> = (0..n)
                .map(|i| {
                    format!(
                        "Content-Type: multipart/mixed; boundary=\"{i}{}\"\r\n\r\nx",
                        "x".repeat(MAX_BOUNDARY)
                    )
                })
                .collect();
            parts.push(text(&"a".repeat(20 << 20)));
            message(&multipart("mixed", "outer", &parts))
        };
        assert!(matches!(
            run(&long(50)).violation,
            Some(Violation::UnusedBoundaries { .. })
        ));
        let far = (0..20)
            .map(|i| {
                let params: String = (0..PARAM_LIMIT).map(|p| format!("p{p}=v; ")).collect();
                format!("Content-Type: multipart/mixed; {params}boundary=\"b{i}\"\r\n\r\nx")
            })
            .chain([text(&"a".repeat(20 << 20))])
            .collect::<Vec<_>>();
        assert!(matches!(
            run(&message(&multipart("mixed", "outer", &far))).violation,
            Some(Violation::UnusedBoundaries { .. })
        ));
    }

    #[test]
    fn broken_base64_still_shows_the_zip() {
        // A stray character makes mail-parser give up on the part; mail clients skip it.
        let mut body = b64(&zip_n(33));
        body.insert_str(40, "!*");
        let part = format!(
            "Content-Type: application/zip; name=\"a.zip\"\r\nContent-Transfer-Encoding: base64\r\n\r\n{body}"
        );
        let found = run(&mixed(&[part]));
        assert!(
            matches!(
                found.violation,
                Some(Violation::TooManyArchiveFiles { found: 33, .. })
            ),
            "{found:?}"
        );
    }

    #[test]
    fn long_boundaries_are_not_followed() {
        let b = "x".repeat(MAX_BOUNDARY + 1);
        let raw = mixed(&[multipart("mixed", &b, &files(3))]);
        let found = run(&raw);
        assert_eq!(found.unreadable, vec!["part 2"]);
        assert_eq!(found.violation, None);
    }

    // -----------------------------------------------------------------------------------------
    // Hostile input: each must give a definite answer, quickly, without a panic.

    #[test]
    #[allow(clippy::type_complexity)]
    fn hostile_inputs_are_bounded() {
        let c = cfg();
        let many_parts = {
            let mut s = String::from("Content-Type: multipart/mixed; boundary=\"b\"\r\n\r\n");
            for _ in 0..100_000 {
                s.push_str(
                    "--b\r\nContent-Type: application/octet-stream; name=\"a\"\r\n\r\nxx\r\n",
                );
            }
            s.push_str("--b--\r\n");
            message(&s)
        };
        let long_header = {
            let mut s = String::from("Subject: ");
            s.push_str(&"aaaaaaaaa ".repeat(1_000_000));
            s.push_str("\r\n\r\nbody\r\n");
            s.into_bytes()
        };
        let many_headers = {
            let mut s = "X-A: b\r\n".repeat(1_300_000);
            s.push_str(
                "Content-Type: multipart/mixed; boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n",
            );
            s.into_bytes()
        };
        let folded_header = {
            let mut s = String::from("Content-Type: multipart/mixed;");
            s.push_str(&"\r\n x=y;".repeat(1_500_000));
            s.push_str(" boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n");
            s.into_bytes()
        };
        let continuations = {
            let mut s = String::from("Content-Type: multipart/mixed; ");
            for i in 0..100_000 {
                s.push_str(&format!("a{i}*{i}=x; "));
            }
            s.push_str("boundary=b\r\n\r\n--b\r\n\r\nx\r\n--b--\r\n");
            s.into_bytes()
        };
        let same_key_continuations = {
            let mut s = String::from("Content-Type: application/zip; ");
            for i in 0..100_000 {
                s.push_str(&format!("name*{i}=aaaaaaaaaa; "));
            }
            s.push_str("\r\n\r\nx\r\n");
            s.into_bytes()
        };
        let encoded_chain = {
            let mut inner = "Content-Type: message/rfc822\r\n\r\n".repeat(10_000);
            inner.push_str("Subject: x\r\n\r\nbody\r\n");
            format!(
                "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                b64(inner.as_bytes())
            )
            .into_bytes()
        };
        let encoded_nest = {
            let mut m = b"Subject: in\r\n\r\nbody\r\n".to_vec();
            for _ in 0..6 {
                m = format!(
                    "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
                    b64(&m)
                )
                .into_bytes();
            }
            m
        };
        let broken_b64 = {
            let mut s = String::from("Content-Type: multipart/mixed; boundary=b\r\n\r\n");
            for _ in 0..1000 {
                s.push_str("--b\r\nContent-Transfer-Encoding: base64\r\nContent-Type: application/zip\r\n\r\n");
                s.push_str("UEsDBA==!!!====%%%%\r\n-- not a boundary\r\n=====\r\n");
            }
            message(&s)
        };
        let dashes = {
            let mut s = format!(
                "Content-Type: multipart/mixed; boundary=\"{}x\"\r\n\r\n--{}x\r\n\r\n",
                "-".repeat(250),
                "-".repeat(250)
            );
            s.push_str(&"-".repeat(5 << 20));
            message(&s)
        };
        let digests = {
            let mut s = String::new();
            for i in 0..1000 {
                s.push_str(&format!(
                    "Content-Type: multipart/digest; boundary=\"d{i}\"\r\n\r\n--d{i}\r\n\r\n"
                ));
            }
            s.push_str("Subject: x\r\n\r\nhi\r\n");
            message(&s)
        };
        let noise: Vec<u8> = (0..5_000_000u32)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
            .collect();
        let zip_noise = {
            let mut z = b"PK\x03\x04".to_vec();
            z.extend_from_slice(&noise[..1_000_000]);
            z.extend_from_slice(
                &b"PK\x05\x06\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x00\x00".repeat(1000),
            );
            mixed(&[file("n.zip", "application/zip", &z)])
        };
        let huge_directory = {
            // 70,000 empty entries: refused before the zip crate reads them all.
            let mut w = ZipWriter::new(Cursor::new(Vec::new()));
            for i in 0..70_000 {
                w.start_file(format!("{i}"), stored()).unwrap();
            }
            mixed(&[file(
                "big.zip",
                "application/zip",
                &w.finish().unwrap().into_inner(),
            )])
        };

        // (what, message, expected violation: Some(Some(v)) exactly, Some(None) none, None any)
        let table: Vec<(&str, Vec<u8>, Option<Option<Violation>>)> = vec![
            (
                "100,000 parts",
                many_parts,
                Some(Some(Violation::TooManyAttachments {
                    found: 999,
                    max: 50,
                })),
            ),
            ("10 MB header line", long_header, Some(None)),
            ("1.3 million header lines", many_headers, Some(None)),
            ("1.5 million folded lines", folded_header, Some(None)),
            (
                "100,000 parameter continuations",
                continuations,
                Some(Some(Violation::TooManyParameterSections { max: 64 })),
            ),
            (
                "100,000 continuations of one name",
                same_key_continuations,
                Some(Some(Violation::TooManyParameterSections { max: 64 })),
            ),
            (
                "multiparts 1000 deep",
                nested_multiparts(1000, false, true),
                Some(Some(Violation::MimeTooDeep { max: 20 })),
            ),
            (
                "multiparts 1000 deep, never closed",
                nested_multiparts(1000, false, false),
                Some(Some(Violation::MimeTooDeep { max: 20 })),
            ),
            (
                "multiparts 100,000 deep, one boundary",
                nested_multiparts(100_000, true, false),
                Some(Some(Violation::MimeTooDeep { max: 20 })),
            ),
            (
                "messages 1000 deep",
                nested_messages(1000),
                Some(Some(Violation::MimeTooDeep { max: 20 })),
            ),
            (
                "messages 300,000 deep",
                nested_messages(300_000),
                Some(Some(Violation::MimeTooDeep { max: 20 })),
            ),
            (
                "encoded message 10,000 deep",
                encoded_chain,
                Some(Some(Violation::MimeTooDeep { max: 20 })),
            ),
            ("encoded messages 6 in each other", encoded_nest, Some(None)),
            ("1000 broken base64 parts", broken_b64, None),
            ("5 MB of dashes, 251-octet boundary", dashes, Some(None)),
            (
                "digests 1000 deep",
                digests,
                Some(Some(Violation::MimeTooDeep { max: 20 })),
            ),
            ("noise", noise.clone(), Some(None)),
            (
                "noise as a body",
                message(&format!("\r\n{}", String::from_utf8_lossy(&noise))),
                Some(None),
            ),
            ("zip magic and noise", zip_noise, Some(None)),
            (
                "70,000 zip entries",
                huge_directory,
                Some(Some(Violation::TooManyArchiveFiles {
                    archive: "big.zip".into(),
                    found: 70_000,
                    max: 32,
                })),
            ),
            ("empty", Vec::new(), Some(None)),
            (
                "headers only",
                b"Content-Type: multipart/mixed; boundary=b".to_vec(),
                Some(None),
            ),
            (
                "boundary then nothing",
                b"Content-Type: multipart/mixed; boundary=b\r\n\r\n--b".to_vec(),
                Some(None),
            ),
            ("NULs", vec![0u8; 1 << 20], Some(None)),
            ("newlines", vec![b'\n'; 1 << 20], Some(None)),
            ("colons", vec![b':'; 1 << 20], Some(None)),
        ];
        for (what, raw, expected) in table {
            let found = timed(what, &raw, &c);
            if let Some(expected) = expected {
                assert_eq!(found.violation, expected, "{what}");
            }
        }
    }

    #[test]
    fn noise_never_panics() {
        // A cheap fuzz: fragments of real MIME shuffled by a fixed generator.
        let pieces: [&[u8]; 16] = [
            b"Content-Type: multipart/mixed; boundary=b\r\n",
            b"Content-Type: message/rfc822\r\n",
            b"Content-Transfer-Encoding: base64\r\n",
            b"Content-Transfer-Encoding: quoted-printable\r\n",
            b"Content-Disposition: attachment; filename*0*=utf-8''a; filename*1=b.zip\r\n",
            b"\r\n",
            b"--b\r\n",
            b"--b--\r\n",
            b"--",
            b"UEsDBBQAAAAIAA==\r\n",
            b"=3D=\r\n",
            b" folded\r\n",
            b"PK\x03\x04",
            b"PK\x05\x06",
            b"Content-Type: multipart/digest; boundary=\"b\"\r\n",
            b"-----BEGIN PGP MESSAGE-----",
        ];
        let mut seed = 0x2545_f491_4f6c_dd1du64;
        for _ in 0..3000 {
            let mut raw = Vec::new();
            for _ in 0..(seed % 40) {
                seed ^= seed << 13;
                seed ^= seed >> 7;
                seed ^= seed << 17;
                raw.extend_from_slice(pieces[(seed % 16) as usize]);
            }
            let found = inspect(&raw, &cfg());
            if let Some(in_place) = inspect_in_place(&raw, &cfg()) {
                assert_eq!(format!("{in_place:?}"), format!("{found:?}"));
            }
        }
    }

    #[test]
    fn in_place_gives_up_only_before_long_work() {
        let c = cfg();
        let alternative = message(&multipart(
            "alternative",
            "alt",
            &[text("hello"), html("<p>hello</p>")],
        ));
        let pgp = mixed(&[file(
            "a.asc",
            "application/octet-stream",
            b"-----BEGIN PGP MESSAGE-----\r\nabc\r\n",
        )]);
        let forwarded = format!(
            "Content-Type: message/rfc822\r\nContent-Transfer-Encoding: base64\r\n\r\n{}",
            b64(&mixed(&files(3)))
        );
        // Linear work: the same result as on a blocking thread.
        for raw in [alternative, mixed(&files(60)), pgp, forwarded.into_bytes()] {
            let in_place = inspect_in_place(&raw, &c).expect("inspected in place");
            assert_eq!(format!("{in_place:?}"), format!("{:?}", inspect(&raw, &c)));
        }
        // An archive to open, a boundary that never comes: left to a blocking thread.
        let zipped = mixed(&[file("a.zip", "application/zip", &zip_n(3))]);
        let unused = message("Content-Type: multipart/mixed; boundary=never\r\n\r\ntext\r\n");
        assert_eq!(inspect(&zipped, &c).archives.len(), 1);
        for raw in [zipped, unused] {
            assert!(inspect_in_place(&raw, &c).is_none());
        }
    }
}
