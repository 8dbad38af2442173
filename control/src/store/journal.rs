//! A journal of string keys to string values (JSON text, opaque here): a host's state
//! kept so that a change costs what the change writes, not what the state holds.
//!
//! # Layout
//!
//! A journal is a directory of its own (mode 0700: state names tenants and addresses);
//! a file store at `state.json` would keep it at `state.json.journal/`, beside the old
//! single-file format it replaces. In it:
//!
//! - `snapshot`: every record as of a generation, written whole and atomically
//!   ([`write_private`]: temporary file, fsync, rename, directory fsync). Absent until
//!   the first compaction, which makes generation 1; no snapshot means generation 0,
//!   empty.
//!   `"TNTJSNAP"`, version `u32`, generation `u64`, count `u64`, then per record key
//!   length `u32`, key, value length `u32`, value; last a CRC32C `u32` of all before.
//! - `log`: the changes since that snapshot. A 24-byte header, `"TNTJLOG\0"`, version
//!   `u32`, the generation of the snapshot it follows `u64`, CRC32C `u32` of those 20
//!   bytes; then one record per [`Journal::append`] batch, appended and fsynced:
//!   marker `FE FF 'J' 'R'` (two bytes UTF-8 never holds, so stored text cannot
//!   imitate one), payload length `u32`, CRC32C `u32` of the length and payload, then
//!   the payload: sequence number `u64` (1 for the first record after the header),
//!   write count `u32`, and per write a tag `u8` (1 put, 2 delete), key length `u32`,
//!   key, and for a put value length `u32`, value. Integers are little-endian.
//! - `.snapshot.<pid>.tmp`, `.log.<pid>.tmp`: an atomic write a crash interrupted;
//!   removed at open.
//!
//! # Crashes
//!
//! A record is acknowledged once written and fsynced, so a crash can only leave the
//! last record torn: at open a last record that is incomplete or fails its checksum,
//! with no valid record after it, is dropped and the log truncated back to the record
//! before ([`Opened::torn_tail_bytes`]); a batch is one record, so it comes back whole
//! or not at all. A bad record with a valid one after it held acknowledged writes:
//! the journal refuses to open rather than lose them.
//!
//! Compaction writes the records as snapshot generation `g + 1`, then replaces the
//! log by an empty one of generation `g + 1`. A crash before the snapshot's rename
//! leaves snapshot `g` and log `g` (and a temporary file); after it, snapshot `g + 1`
//! beside log `g`, whose writes the snapshot already holds, so it is ignored and
//! replaced at open. A log newer than its snapshot, or a log missing beside a
//! snapshot, means files were lost or swapped by hand: refused.
//!
//! The directory is locked (`flock`) while open, so two daemons cannot interleave
//! appends.

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::os::unix::fs::{DirBuilderExt, FileExt};
use std::path::{Path, PathBuf};

use anyhow::{bail, Context};
use nix::fcntl::{Flock, FlockArg};

use super::write_private;

const SNAPSHOT_FILE: &str = "snapshot";
const LOG_FILE: &str = "log";
const SNAPSHOT_MAGIC: &[u8; 8] = b"TNTJSNAP";
const LOG_MAGIC: &[u8; 8] = b"TNTJLOG\0";
const FORMAT_VERSION: u32 = 1;
const LOG_HEADER_LEN: u64 = 8 + 4 + 8 + 4;
const RECORD_MARKER: [u8; 4] = [0xFE, 0xFF, b'J', b'R'];
const RECORD_HEADER_LEN: usize = 4 + 4 + 4;
const TAG_PUT: u8 = 1;
const TAG_DELETE: u8 = 2;

/// One change in a batch.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Write {
    /// Sets a key's value.
    Put(String, String),
    /// Removes a key (nothing when absent).
    Delete(String),
}

/// When the log is folded into a new snapshot.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Options {
    /// The log is compacted once it holds at least this many bytes of records...
    pub compact_min_log_bytes: u64,
    /// ...and at least this many times the snapshot's size, so that the O(state) cost
    /// of a compaction is paid once per that many bytes appended.
    pub compact_log_ratio: u64,
    /// Also compacts after this many records whatever their size (tests: forces
    /// compactions often; not amortized, so not for a daemon).
    pub compact_every_records: Option<u64>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            compact_min_log_bytes: 1 << 20,
            compact_log_ratio: 4,
            compact_every_records: None,
        }
    }
}

/// What [`Journal::open`] found.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Opened {
    /// The snapshot generation the journal continues.
    pub generation: u64,
    /// Records the snapshot held.
    pub snapshot_records: usize,
    /// Log records replayed over it.
    pub log_records: u64,
    /// Bytes of a torn last record dropped (the log truncated before them).
    pub torn_tail_bytes: Option<u64>,
    /// A log older than the snapshot (a compaction interrupted after writing its
    /// snapshot) was replaced by an empty one.
    pub stale_log_replaced: bool,
    /// Temporary files of interrupted atomic writes removed.
    pub temporary_files_removed: usize,
}

/// An open journal: the current records in memory, appends to the log on disk.
///
/// Calls block on fsync, and [`Journal::append`] compacts inline when the log has grown
/// enough: call it from a blocking thread.
pub struct Journal {
    dir: PathBuf,
    log: File,
    log_len: u64,
    log_records: u64,
    generation: u64,
    snapshot_len: u64,
    records: BTreeMap<String, String>,
    options: Options,
    /// After a compaction that failed before its snapshot was kept, the next attempt
    /// waits until the log is this long, so a full disk does not cost every append a
    /// snapshot.
    compaction_retry_at: u64,
    /// Why appends are refused: the file's state is not known (a failed write could not
    /// be undone, or the log could not be restarted after a new snapshot). Reopening
    /// replays what the disk holds.
    broken: Option<String>,
    opened: Opened,
    _lock: Flock<File>,
}

impl Journal {
    /// Opens the journal in directory `dir` (made, 0700, if missing) with the default
    /// [`Options`]; returns it with its records.
    pub fn open(dir: impl AsRef<Path>) -> anyhow::Result<(Journal, BTreeMap<String, String>)> {
        Self::open_with(dir, Options::default())
    }

    /// [`Journal::open`] with the compaction thresholds given.
    pub fn open_with(
        dir: impl AsRef<Path>,
        options: Options,
    ) -> anyhow::Result<(Journal, BTreeMap<String, String>)> {
        let dir = dir.as_ref().to_path_buf();
        make_private_dir(&dir)?;
        let lock = lock_dir(&dir)?;
        let mut opened = Opened {
            temporary_files_removed: remove_temporary_files(&dir)?,
            ..Opened::default()
        };

        let snapshot_path = dir.join(SNAPSHOT_FILE);
        let (generation, mut records, snapshot_len) = match fs::read(&snapshot_path) {
            Ok(bytes) => {
                let (generation, records) = decode_snapshot(&bytes)
                    .with_context(|| format!("{} is damaged", snapshot_path.display()))?;
                (generation, records, bytes.len() as u64)
            }
            Err(e) if e.kind() == ErrorKind::NotFound => (0, BTreeMap::new(), 0),
            Err(e) => {
                return Err(e).with_context(|| format!("reading {}", snapshot_path.display()))
            }
        };
        opened.generation = generation;
        opened.snapshot_records = records.len();

        let log_path = dir.join(LOG_FILE);
        let log_bytes = match fs::read(&log_path) {
            Ok(bytes) => Some(bytes),
            Err(e) if e.kind() == ErrorKind::NotFound => None,
            Err(e) => return Err(e).with_context(|| format!("reading {}", log_path.display())),
        };
        let (log_len, log_records) = match log_bytes {
            None if generation > 0 => bail!(
                "{} is missing beside {} (generation {generation}): the writes since that \
                 snapshot are lost; refusing to open without them",
                log_path.display(),
                snapshot_path.display()
            ),
            None => {
                write_private(&log_path, &log_header(generation))?;
                (LOG_HEADER_LEN, 0)
            }
            Some(bytes) => {
                let log_generation = decode_log_header(&bytes)
                    .with_context(|| format!("{} is damaged", log_path.display()))?;
                if log_generation > generation {
                    bail!(
                        "{} follows snapshot generation {log_generation} but {} is generation \
                         {generation}: the newer snapshot is lost; refusing to open",
                        log_path.display(),
                        snapshot_path.display()
                    );
                }
                if log_generation < generation {
                    tracing::warn!(
                        log = %log_path.display(),
                        log_generation,
                        snapshot_generation = generation,
                        "journal log predates its snapshot (a compaction was interrupted): \
                         the snapshot holds its writes; starting a new log"
                    );
                    write_private(&log_path, &log_header(generation))?;
                    opened.stale_log_replaced = true;
                    (LOG_HEADER_LEN, 0)
                } else {
                    let replayed = replay(&bytes, &mut records)
                        .with_context(|| format!("replaying {}", log_path.display()))?;
                    if let Some(torn) = replayed.torn_tail_bytes {
                        tracing::warn!(
                            log = %log_path.display(),
                            dropped_bytes = torn,
                            kept_records = replayed.records,
                            "journal log ends in a torn record (a crash during an append \
                             that was never acknowledged): dropped"
                        );
                        truncate(&log_path, replayed.len)?;
                        opened.torn_tail_bytes = Some(torn);
                    }
                    (replayed.len, replayed.records)
                }
            }
        };
        opened.log_records = log_records;

        let log = open_for_append(&log_path)?;
        let journal = Journal {
            dir,
            log,
            log_len,
            log_records,
            generation,
            snapshot_len,
            records: records.clone(),
            options,
            compaction_retry_at: 0,
            broken: None,
            opened,
            _lock: lock,
        };
        Ok((journal, records))
    }

    /// Appends `batch` as one record, all of it or none on replay, and returns once it
    /// is on disk (fsynced). An empty batch writes nothing. On error the batch is not
    /// kept: the log is cut back to before it (should even that fail, the journal
    /// refuses later writes until reopened, and the reopen shows whether the batch
    /// reached the disk). Then, when [`Options`] say the log has grown enough, compacts
    /// it on this thread (O(records), amortized over the appends that grew the log); a
    /// compaction that fails is logged and the batch stays acknowledged.
    pub fn append(&mut self, batch: &[Write]) -> anyhow::Result<()> {
        self.usable()?;
        if batch.is_empty() {
            return Ok(());
        }
        let record = encode_record(self.log_records + 1, batch)?;
        if let Err(e) = self.write_at_end(&record) {
            // A partial record left in place would sit before the next one and read as
            // corruption in the middle of the log.
            let undone = self
                .log
                .set_len(self.log_len)
                .and_then(|()| self.log.sync_data());
            if let Err(undo) = undone {
                self.broken = Some(format!(
                    "a failed append could not be undone ({undo}); reopen the journal"
                ));
            }
            return Err(e);
        }
        self.log_len += record.len() as u64;
        self.log_records += 1;
        for write in batch {
            match write {
                Write::Put(key, value) => {
                    self.records.insert(key.clone(), value.clone());
                }
                Write::Delete(key) => {
                    self.records.remove(key);
                }
            }
        }
        if self.compaction_due() {
            if let Err(e) = self.compact() {
                tracing::warn!(
                    journal = %self.dir.display(),
                    error = %format!("{e:#}"),
                    "journal compaction failed; the log keeps growing"
                );
            }
        }
        Ok(())
    }

    /// Writes the records as a new snapshot and restarts the log empty. Runs on the
    /// calling thread: O(records).
    pub fn compact(&mut self) -> anyhow::Result<()> {
        self.usable()?;
        let next = self.generation + 1;
        let snapshot = encode_snapshot(next, &self.records)?;
        let snapshot_path = self.dir.join(SNAPSHOT_FILE);
        if let Err(e) = write_private(&snapshot_path, &snapshot) {
            // The rename may have happened before a later step failed; if so the old
            // log is stale from now on and appending to it would lose writes.
            match snapshot_generation(&snapshot_path) {
                Ok(on_disk) if on_disk == next => {}
                Ok(_) => {
                    self.compaction_retry_at = self.log_len + self.compaction_threshold();
                    return Err(e.context("writing the journal snapshot"));
                }
                Err(read) => {
                    self.broken = Some(format!(
                        "after a failed snapshot write ({e:#}) its state could not be read \
                         ({read:#}); reopen the journal"
                    ));
                    return Err(e.context("writing the journal snapshot"));
                }
            }
        }
        self.generation = next;
        self.snapshot_len = snapshot.len() as u64;

        let log_path = self.dir.join(LOG_FILE);
        let restarted =
            write_private(&log_path, &log_header(next)).and_then(|()| open_for_append(&log_path));
        match restarted {
            Ok(log) => {
                self.log = log;
                self.log_len = LOG_HEADER_LEN;
                self.log_records = 0;
                self.compaction_retry_at = 0;
                Ok(())
            }
            Err(e) => {
                self.broken = Some(format!(
                    "the log could not be restarted after snapshot generation {next} ({e:#}); \
                     reopen the journal"
                ));
                Err(e.context("restarting the journal log"))
            }
        }
    }

    /// The current records.
    pub fn records(&self) -> &BTreeMap<String, String> {
        &self.records
    }

    /// The generation of the snapshot the log follows (compactions so far).
    pub fn generation(&self) -> u64 {
        self.generation
    }

    /// What opening found (torn tail dropped, stale log replaced...).
    pub fn opened(&self) -> &Opened {
        &self.opened
    }

    /// Its directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Bytes in the log file, header included.
    pub fn log_len(&self) -> u64 {
        self.log_len
    }

    fn usable(&self) -> anyhow::Result<()> {
        match &self.broken {
            Some(why) => bail!("journal {} refuses writes: {why}", self.dir.display()),
            None => Ok(()),
        }
    }

    fn write_at_end(&self, record: &[u8]) -> anyhow::Result<()> {
        let log_path = || self.dir.join(LOG_FILE).display().to_string();
        self.log
            .write_all_at(record, self.log_len)
            .with_context(|| format!("appending to {}", log_path()))?;
        self.log
            .sync_data()
            .with_context(|| format!("fsync of {}", log_path()))
    }

    fn compaction_threshold(&self) -> u64 {
        self.options.compact_min_log_bytes.max(
            self.options
                .compact_log_ratio
                .saturating_mul(self.snapshot_len),
        )
    }

    fn compaction_due(&self) -> bool {
        if let Some(every) = self.options.compact_every_records {
            if self.log_records >= every.max(1) {
                return true;
            }
        }
        self.log_len >= self.compaction_retry_at
            && self.log_len - LOG_HEADER_LEN >= self.compaction_threshold()
    }
}

/// Makes `dir` (0700) if missing, fsyncing its parent so the new entry survives a crash.
fn make_private_dir(dir: &Path) -> anyhow::Result<()> {
    match fs::metadata(dir) {
        Ok(found) if found.is_dir() => return Ok(()),
        Ok(_) => bail!(
            "{} is not a directory: a journal is a directory of its own (an old \
             single-file state sits beside it, not in its place)",
            dir.display()
        ),
        Err(e) if e.kind() == ErrorKind::NotFound => {}
        Err(e) => return Err(e).with_context(|| format!("reading {}", dir.display())),
    }
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))?;
    let parent = match dir.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    File::open(parent)
        .and_then(|d| d.sync_all())
        .with_context(|| format!("fsync of {}", parent.display()))
}

fn lock_dir(dir: &Path) -> anyhow::Result<Flock<File>> {
    let handle = File::open(dir).with_context(|| format!("opening {}", dir.display()))?;
    Flock::lock(handle, FlockArg::LockExclusiveNonblock).map_err(|(_, errno)| {
        anyhow::Error::new(InUse {
            dir: dir.to_owned(),
            errno,
        })
    })
}

/// The journal is held by another process (another tenetd on the same state): not a
/// damaged journal, and never to be moved aside from under it.
#[derive(Debug)]
pub struct InUse {
    /// The journal's directory.
    pub dir: PathBuf,
    errno: nix::errno::Errno,
}

impl std::fmt::Display for InUse {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "journal {} is in use (another tenetd holds it): {}",
            self.dir.display(),
            self.errno
        )
    }
}

impl std::error::Error for InUse {}

/// Removes what [`write_private`] leaves behind when a crash interrupts it.
fn remove_temporary_files(dir: &Path) -> anyhow::Result<usize> {
    let mut removed = 0;
    let entries = fs::read_dir(dir).with_context(|| format!("listing {}", dir.display()))?;
    for entry in entries {
        let entry = entry.with_context(|| format!("listing {}", dir.display()))?;
        let name = entry.file_name();
        let name = name.to_string_lossy();
        let ours = [SNAPSHOT_FILE, LOG_FILE]
            .iter()
            .any(|file| name.starts_with(&format!(".{file}.")));
        if ours && name.ends_with(".tmp") {
            fs::remove_file(entry.path())
                .with_context(|| format!("removing {}", entry.path().display()))?;
            removed += 1;
        }
    }
    Ok(removed)
}

fn open_for_append(path: &Path) -> anyhow::Result<File> {
    OpenOptions::new()
        .write(true)
        .open(path)
        .with_context(|| format!("opening {}", path.display()))
}

fn truncate(path: &Path, len: u64) -> anyhow::Result<()> {
    let file = open_for_append(path)?;
    file.set_len(len)
        .and_then(|()| file.sync_data())
        .with_context(|| format!("truncating {} to {len} bytes", path.display()))
}

fn log_header(generation: u64) -> Vec<u8> {
    let mut header = Vec::with_capacity(LOG_HEADER_LEN as usize);
    header.extend_from_slice(LOG_MAGIC);
    header.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    header.extend_from_slice(&generation.to_le_bytes());
    let crc = crc32c(&[&header]);
    header.extend_from_slice(&crc.to_le_bytes());
    header
}

fn decode_log_header(bytes: &[u8]) -> anyhow::Result<u64> {
    if !bytes.starts_with(LOG_MAGIC) {
        bail!("not a tenet journal log (no magic)");
    }
    if bytes.len() < LOG_HEADER_LEN as usize {
        bail!("{} bytes, shorter than a journal log's header", bytes.len());
    }
    let mut header = Reader::new(&bytes[LOG_MAGIC.len()..LOG_HEADER_LEN as usize]);
    let version = header.u32()?;
    let generation = header.u64()?;
    let crc = header.u32()?;
    if crc != crc32c(&[&bytes[..LOG_HEADER_LEN as usize - 4]]) {
        bail!("its header fails its checksum");
    }
    check_version(version)?;
    Ok(generation)
}

fn check_version(version: u32) -> anyhow::Result<()> {
    if version != FORMAT_VERSION {
        bail!("format version {version}; this tenet reads version {FORMAT_VERSION}");
    }
    Ok(())
}

fn encode_snapshot(generation: u64, records: &BTreeMap<String, String>) -> anyhow::Result<Vec<u8>> {
    let body: usize = records.iter().map(|(k, v)| 8 + k.len() + v.len()).sum();
    let mut bytes = Vec::with_capacity(8 + 4 + 8 + 8 + body + 4);
    bytes.extend_from_slice(SNAPSHOT_MAGIC);
    bytes.extend_from_slice(&FORMAT_VERSION.to_le_bytes());
    bytes.extend_from_slice(&generation.to_le_bytes());
    bytes.extend_from_slice(&(records.len() as u64).to_le_bytes());
    for (key, value) in records {
        put_string(&mut bytes, key)?;
        put_string(&mut bytes, value)?;
    }
    let crc = crc32c(&[&bytes]);
    bytes.extend_from_slice(&crc.to_le_bytes());
    Ok(bytes)
}

fn decode_snapshot(bytes: &[u8]) -> anyhow::Result<(u64, BTreeMap<String, String>)> {
    let Some(body_len) = bytes.len().checked_sub(4) else {
        bail!("{} bytes, too short for a journal snapshot", bytes.len());
    };
    let (body, crc) = bytes.split_at(body_len);
    let mut reader = Reader::new(body);
    if reader.take(8).ok() != Some(SNAPSHOT_MAGIC.as_slice()) {
        bail!("not a tenet journal snapshot (no magic)");
    }
    if u32::from_le_bytes(crc.try_into().expect("4 bytes")) != crc32c(&[body]) {
        bail!("it fails its checksum");
    }
    check_version(reader.u32()?)?;
    let generation = reader.u64()?;
    let count = reader.u64()?;
    let mut records = BTreeMap::new();
    for _ in 0..count {
        let key = reader.string()?;
        let value = reader.string()?;
        records.insert(key, value);
    }
    if !reader.is_empty() {
        bail!("bytes after its {count} records");
    }
    Ok((generation, records))
}

/// The generation of the snapshot at `path` as it is now (0 when there is none).
fn snapshot_generation(path: &Path) -> anyhow::Result<u64> {
    match fs::read(path) {
        Ok(bytes) => decode_snapshot(&bytes)
            .map(|(generation, _)| generation)
            .with_context(|| format!("{} is damaged", path.display())),
        Err(e) if e.kind() == ErrorKind::NotFound => Ok(0),
        Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
    }
}

fn encode_record(sequence: u64, batch: &[Write]) -> anyhow::Result<Vec<u8>> {
    let payload_len: usize = 8
        + 4
        + batch
            .iter()
            .map(|write| match write {
                Write::Put(key, value) => 1 + 4 + key.len() + 4 + value.len(),
                Write::Delete(key) => 1 + 4 + key.len(),
            })
            .sum::<usize>();
    let Ok(payload_len32) = u32::try_from(payload_len) else {
        bail!("a batch of {payload_len} bytes is more than a journal record holds (4 GiB)");
    };
    let count = u32::try_from(batch.len()).context("too many writes in one batch")?;
    let mut record = Vec::with_capacity(RECORD_HEADER_LEN + payload_len);
    record.extend_from_slice(&RECORD_MARKER);
    record.extend_from_slice(&payload_len32.to_le_bytes());
    record.extend_from_slice(&[0; 4]);
    record.extend_from_slice(&sequence.to_le_bytes());
    record.extend_from_slice(&count.to_le_bytes());
    for write in batch {
        match write {
            Write::Put(key, value) => {
                record.push(TAG_PUT);
                put_string(&mut record, key)?;
                put_string(&mut record, value)?;
            }
            Write::Delete(key) => {
                record.push(TAG_DELETE);
                put_string(&mut record, key)?;
            }
        }
    }
    let crc = crc32c(&[&record[4..8], &record[RECORD_HEADER_LEN..]]);
    record[8..12].copy_from_slice(&crc.to_le_bytes());
    Ok(record)
}

/// The payload of the record framed at the start of `bytes`, or why there is none.
fn framed_record(bytes: &[u8]) -> Result<&[u8], &'static str> {
    if bytes.len() < RECORD_HEADER_LEN {
        return Err("incomplete record header");
    }
    if bytes[..4] != RECORD_MARKER {
        return Err("no record marker");
    }
    let len = u32::from_le_bytes(bytes[4..8].try_into().expect("4 bytes")) as usize;
    let crc = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes"));
    let Some(payload) = bytes[RECORD_HEADER_LEN..].get(..len) else {
        return Err("record runs past the end of the file");
    };
    if crc != crc32c(&[&bytes[4..8], payload]) {
        return Err("record fails its checksum");
    }
    Ok(payload)
}

/// Offset of the first valid record frame at or after `from`.
fn next_valid_record(bytes: &[u8], from: usize) -> Option<usize> {
    let mut at = from;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        let found = bytes[at..]
            .windows(RECORD_MARKER.len())
            .position(|window| window == RECORD_MARKER)?;
        at += found;
        if framed_record(&bytes[at..]).is_ok() {
            return Some(at);
        }
        at += 1;
    }
    None
}

struct Replayed {
    /// Bytes up to the end of the last good record.
    len: u64,
    records: u64,
    torn_tail_bytes: Option<u64>,
}

/// Applies the log's records to `records`, all but a torn last one.
fn replay(bytes: &[u8], records: &mut BTreeMap<String, String>) -> anyhow::Result<Replayed> {
    let mut at = LOG_HEADER_LEN as usize;
    let mut count = 0u64;
    let mut batch = Vec::new();
    while at < bytes.len() {
        let payload = match framed_record(&bytes[at..]) {
            Ok(payload) => payload,
            Err(why) => {
                if let Some(later) = next_valid_record(bytes, at + 1) {
                    bail!(
                        "bad record at byte {at} ({why}) with a valid record after it at byte \
                         {later}: acknowledged writes are damaged; refusing to drop them"
                    );
                }
                return Ok(Replayed {
                    len: at as u64,
                    records: count,
                    torn_tail_bytes: Some((bytes.len() - at) as u64),
                });
            }
        };
        // A payload that checks out but does not decode was written that way: a bug,
        // not a crash, so it is refused rather than dropped.
        let sequence = decode_payload(payload, &mut batch)
            .with_context(|| format!("record at byte {at} does not decode"))?;
        if sequence != count + 1 {
            bail!(
                "record at byte {at} has sequence number {sequence} where {} was due",
                count + 1
            );
        }
        for write in batch.drain(..) {
            match write {
                Write::Put(key, value) => {
                    records.insert(key, value);
                }
                Write::Delete(key) => {
                    records.remove(&key);
                }
            }
        }
        count += 1;
        at += RECORD_HEADER_LEN + payload.len();
    }
    Ok(Replayed {
        len: at as u64,
        records: count,
        torn_tail_bytes: None,
    })
}

/// Decodes a record's writes into `batch`; returns its sequence number.
fn decode_payload(payload: &[u8], batch: &mut Vec<Write>) -> anyhow::Result<u64> {
    let mut reader = Reader::new(payload);
    let sequence = reader.u64()?;
    let count = reader.u32()?;
    for _ in 0..count {
        let write = match reader.u8()? {
            TAG_PUT => Write::Put(reader.string()?, reader.string()?),
            TAG_DELETE => Write::Delete(reader.string()?),
            tag => bail!("unknown write tag {tag}"),
        };
        batch.push(write);
    }
    if !reader.is_empty() {
        bail!("bytes after its {count} writes");
    }
    Ok(sequence)
}

fn put_string(bytes: &mut Vec<u8>, text: &str) -> anyhow::Result<()> {
    let len = u32::try_from(text.len()).with_context(|| {
        format!(
            "a string of {} bytes is more than the journal holds (4 GiB)",
            text.len()
        )
    })?;
    bytes.extend_from_slice(&len.to_le_bytes());
    bytes.extend_from_slice(text.as_bytes());
    Ok(())
}

/// Reads the journal's little-endian fields, every length checked against what is left.
struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    fn new(bytes: &'a [u8]) -> Self {
        Self { bytes }
    }

    fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    fn take(&mut self, len: usize) -> anyhow::Result<&'a [u8]> {
        if self.bytes.len() < len {
            bail!("truncated: {len} bytes wanted, {} left", self.bytes.len());
        }
        let (taken, rest) = self.bytes.split_at(len);
        self.bytes = rest;
        Ok(taken)
    }

    fn u8(&mut self) -> anyhow::Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u32(&mut self) -> anyhow::Result<u32> {
        Ok(u32::from_le_bytes(
            self.take(4)?.try_into().expect("4 bytes"),
        ))
    }

    fn u64(&mut self) -> anyhow::Result<u64> {
        Ok(u64::from_le_bytes(
            self.take(8)?.try_into().expect("8 bytes"),
        ))
    }

    fn string(&mut self) -> anyhow::Result<String> {
        let len = self.u32()? as usize;
        let bytes = self.take(len)?;
        String::from_utf8(bytes.to_vec()).context("a string that is not UTF-8")
    }
}

/// CRC32C (Castagnoli) tables for slicing-by-8: a byte at a time is the bottleneck of a
/// 100,000-record compaction's checksum.
const CRC32C_TABLES: [[u32; 256]; 8] = {
    let mut tables = [[0u32; 256]; 8];
    let mut byte = 0;
    while byte < 256 {
        let mut crc = byte as u32;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ 0x82F6_3B78
            } else {
                crc >> 1
            };
            bit += 1;
        }
        tables[0][byte] = crc;
        byte += 1;
    }
    let mut byte = 0;
    while byte < 256 {
        let mut slice = 1;
        while slice < 8 {
            let previous = tables[slice - 1][byte];
            tables[slice][byte] = (previous >> 8) ^ tables[0][(previous & 0xFF) as usize];
            slice += 1;
        }
        byte += 1;
    }
    tables
};

/// CRC32C of the concatenation of `parts`.
fn crc32c(parts: &[&[u8]]) -> u32 {
    let t = &CRC32C_TABLES;
    let mut crc = !0u32;
    for part in parts {
        let mut chunks = part.chunks_exact(8);
        for chunk in &mut chunks {
            let low = crc ^ u32::from_le_bytes(chunk[..4].try_into().expect("4 bytes"));
            let high = u32::from_le_bytes(chunk[4..].try_into().expect("4 bytes"));
            crc = t[7][(low & 0xFF) as usize]
                ^ t[6][((low >> 8) & 0xFF) as usize]
                ^ t[5][((low >> 16) & 0xFF) as usize]
                ^ t[4][(low >> 24) as usize]
                ^ t[3][(high & 0xFF) as usize]
                ^ t[2][((high >> 8) & 0xFF) as usize]
                ^ t[1][((high >> 16) & 0xFF) as usize]
                ^ t[0][(high >> 24) as usize];
        }
        for &byte in chunks.remainder() {
            crc = t[0][((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
        }
    }
    !crc
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader, Write as _};
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::{Duration, Instant};

    use proptest::collection::vec;
    use proptest::prelude::*;

    /// A directory of its own for one test, removed after it.
    struct Scratch(PathBuf);

    impl Scratch {
        fn new(name: &str) -> Self {
            static NEXT: AtomicUsize = AtomicUsize::new(0);
            let dir = std::env::temp_dir().join(format!(
                "tenet-journal-{name}-{}-{}",
                std::process::id(),
                NEXT.fetch_add(1, Ordering::Relaxed)
            ));
            let _ = fs::remove_dir_all(&dir);
            Self(dir)
        }

        /// Where a file store at `state.json` would keep its journal.
        fn journal(&self) -> PathBuf {
            self.0.join("state.json.journal")
        }

        fn log(&self) -> PathBuf {
            self.journal().join(LOG_FILE)
        }

        fn snapshot(&self) -> PathBuf {
            self.journal().join(SNAPSHOT_FILE)
        }
    }

    impl Drop for Scratch {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    fn put(key: &str, value: &str) -> Write {
        Write::Put(key.into(), value.into())
    }

    fn delete(key: &str) -> Write {
        Write::Delete(key.into())
    }

    fn records(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn apply(model: &mut BTreeMap<String, String>, batch: &[Write]) {
        for write in batch {
            match write {
                Write::Put(key, value) => {
                    model.insert(key.clone(), value.clone());
                }
                Write::Delete(key) => {
                    model.remove(key);
                }
            }
        }
    }

    fn append_bytes(path: &Path, bytes: &[u8]) {
        let mut file = OpenOptions::new().append(true).open(path).unwrap();
        file.write_all(bytes).unwrap();
    }

    fn set_len(path: &Path, len: u64) {
        OpenOptions::new()
            .write(true)
            .open(path)
            .unwrap()
            .set_len(len)
            .unwrap();
    }

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o777
    }

    fn open_error(dir: &Path) -> String {
        match Journal::open(dir) {
            Ok(_) => panic!("{} opened", dir.display()),
            Err(e) => format!("{e:#}"),
        }
    }

    #[test]
    fn crc32c_matches_the_standard_check_value_and_a_byte_at_a_time() {
        assert_eq!(crc32c(&[b"123456789"]), 0xE306_9283);
        assert_eq!(crc32c(&[b"1234", b"", b"56789"]), 0xE306_9283);
        let data: Vec<u8> = (0..300u32).map(|i| (i * 7 + i / 5) as u8).collect();
        for len in 0..data.len() {
            let mut crc = !0u32;
            for &byte in &data[..len] {
                crc = CRC32C_TABLES[0][((crc ^ u32::from(byte)) & 0xFF) as usize] ^ (crc >> 8);
            }
            let split = len / 3;
            assert_eq!(
                crc32c(&[&data[..split], &data[split..len]]),
                !crc,
                "{len} bytes"
            );
        }
    }

    #[test]
    fn appends_replay_after_reopen_in_private_files() {
        let scratch = Scratch::new("round-trip");
        let dir = scratch.journal();
        let (mut journal, found) = Journal::open(&dir).unwrap();
        assert!(found.is_empty());
        journal.append(&[put("tenant/red", r#"{"id":7}"#)]).unwrap();
        journal
            .append(&[put("tenant/blue", r#"{"id":8}"#), put("port/é", "")])
            .unwrap();
        journal.append(&[]).unwrap();
        journal.append(&[put("", "empty key")]).unwrap();
        let len = journal.log_len();
        drop(journal);
        assert_eq!(fs::metadata(scratch.log()).unwrap().len(), len);
        assert_eq!(mode(&dir), 0o700, "the directory is root's alone");
        assert_eq!(mode(&scratch.log()), 0o600, "the log is root's alone");

        let (journal, found) = Journal::open(&dir).unwrap();
        let expected = records(&[
            ("tenant/red", r#"{"id":7}"#),
            ("tenant/blue", r#"{"id":8}"#),
            ("port/é", ""),
            ("", "empty key"),
        ]);
        assert_eq!(found, expected);
        assert_eq!(journal.records(), &expected);
        assert_eq!(
            journal.opened(),
            &Opened {
                log_records: 3,
                ..Opened::default()
            },
            "the empty batch wrote no record"
        );
    }

    #[test]
    fn deletes_replay_in_order() {
        let scratch = Scratch::new("deletes");
        let dir = scratch.journal();
        let (mut journal, _) = Journal::open(&dir).unwrap();
        journal.append(&[put("a", "1"), put("b", "2")]).unwrap();
        journal.append(&[delete("a"), delete("never")]).unwrap();
        journal
            .append(&[put("c", "3"), delete("c"), delete("b"), put("b", "4")])
            .unwrap();
        let expected = records(&[("b", "4")]);
        assert_eq!(journal.records(), &expected);
        drop(journal);
        assert_eq!(Journal::open(&dir).unwrap().1, expected);
    }

    #[test]
    fn an_old_state_file_is_not_taken_for_a_journal() {
        let scratch = Scratch::new("old-file");
        fs::create_dir_all(&scratch.0).unwrap();
        let old = scratch.0.join("state.json");
        fs::write(&old, b"{\"tenants\": []}").unwrap();
        let error = open_error(&old);
        assert!(error.contains("is not a directory"), "{error}");
        assert_eq!(
            fs::read(&old).unwrap(),
            b"{\"tenants\": []}",
            "left as found"
        );
        Journal::open(scratch.journal()).unwrap();
    }

    #[test]
    fn a_second_open_is_refused_while_the_first_holds_it() {
        let scratch = Scratch::new("lock");
        let (journal, _) = Journal::open(scratch.journal()).unwrap();
        let error = open_error(&scratch.journal());
        assert!(error.contains("in use"), "{error}");
        drop(journal);
        Journal::open(scratch.journal()).unwrap();
    }

    /// A log of three records (the middle one a batch of three) and the records after
    /// each.
    fn three_records(scratch: &Scratch) -> (Vec<u8>, Vec<u64>, Vec<BTreeMap<String, String>>) {
        let (mut journal, _) = Journal::open(scratch.journal()).unwrap();
        let mut ends = vec![journal.log_len()];
        let mut states = vec![BTreeMap::new()];
        let batches = [
            vec![put("tenant/red", r#"{"id":7}"#)],
            vec![
                put("tenant/blue", r#"{"id":8}"#),
                delete("tenant/red"),
                put("port/p1", r#"{"tenant":"blue"}"#),
            ],
            vec![put("tenant/green", r#"{"id":9}"#)],
        ];
        let mut model = BTreeMap::new();
        for batch in &batches {
            journal.append(batch).unwrap();
            apply(&mut model, batch);
            ends.push(journal.log_len());
            states.push(model.clone());
        }
        drop(journal);
        (fs::read(scratch.log()).unwrap(), ends, states)
    }

    /// Opens the journal of `scratch`, expecting the torn tail after `kept` dropped, then
    /// checks an append after it replays.
    fn reopens_to(scratch: &Scratch, state: &BTreeMap<String, String>, kept: u64, torn: u64) {
        let (mut journal, found) = Journal::open(scratch.journal()).unwrap();
        assert_eq!(&found, state);
        assert_eq!(journal.opened().torn_tail_bytes, Some(torn));
        assert_eq!(
            fs::metadata(scratch.log()).unwrap().len(),
            kept,
            "log truncated"
        );
        journal.append(&[put("after", "repair")]).unwrap();
        drop(journal);
        let (journal, found) = Journal::open(scratch.journal()).unwrap();
        let mut expected = state.clone();
        expected.insert("after".into(), "repair".into());
        assert_eq!(found, expected);
        assert_eq!(journal.opened().torn_tail_bytes, None, "the repair lasted");
    }

    #[test]
    fn a_torn_batch_drops_whole_at_every_cut() {
        let scratch = Scratch::new("torn-cut");
        let (full, ends, states) = three_records(&scratch);
        // Cuts in the last record, and in the middle one with the last gone too.
        for cut in ends[1] + 1..ends[3] {
            if cut == ends[2] {
                continue;
            }
            fs::write(scratch.log(), &full[..cut as usize]).unwrap();
            let kept = if cut < ends[2] { 1 } else { 2 };
            reopens_to(&scratch, &states[kept], ends[kept], cut - ends[kept]);
        }
    }

    #[test]
    fn garbage_after_the_last_record_is_dropped() {
        let scratch = Scratch::new("garbage");
        let (full, ends, states) = three_records(&scratch);
        let mut marker_and_huge_length = RECORD_MARKER.to_vec();
        marker_and_huge_length.extend_from_slice(&u32::MAX.to_le_bytes());
        marker_and_huge_length.extend_from_slice(&[1, 2, 3, 4, 5, 6]);
        let mut marker_and_bad_checksum = RECORD_MARKER.to_vec();
        marker_and_bad_checksum.extend_from_slice(&4u32.to_le_bytes());
        marker_and_bad_checksum.extend_from_slice(&[0; 4 + 4 + 20]);
        let tails: [Vec<u8>; 5] = [
            vec![0; 4096],
            vec![0xAB; 100],
            RECORD_MARKER[..3].to_vec(),
            marker_and_huge_length,
            marker_and_bad_checksum,
        ];
        for tail in tails {
            fs::write(scratch.log(), &full).unwrap();
            append_bytes(&scratch.log(), &tail);
            reopens_to(&scratch, &states[3], ends[3], tail.len() as u64);
        }
    }

    #[test]
    fn a_last_record_failing_its_checksum_is_dropped() {
        let scratch = Scratch::new("bad-checksum");
        let (full, ends, states) = three_records(&scratch);
        // The length field, the checksum itself, and a byte of the value.
        for at in [ends[2] + 5, ends[2] + 9, ends[3] - 3] {
            let mut damaged = full.clone();
            damaged[at as usize] ^= 0x40;
            fs::write(scratch.log(), &damaged).unwrap();
            reopens_to(&scratch, &states[2], ends[2], ends[3] - ends[2]);
        }
    }

    #[test]
    fn a_bad_record_before_good_ones_is_refused() {
        let scratch = Scratch::new("middle");
        let (full, ends, _) = three_records(&scratch);
        // The first record's marker, its payload, the middle record's length (pointing
        // past the end of the file), its checksum, its sequence number's checksum.
        for at in [
            ends[0],
            ends[0] + 20,
            ends[1] + 6,
            ends[1] + 8,
            ends[1] + 12,
        ] {
            let mut damaged = full.clone();
            damaged[at as usize] ^= 0x80;
            fs::write(scratch.log(), &damaged).unwrap();
            let error = open_error(&scratch.journal());
            assert!(
                error.contains(&scratch.log().display().to_string()) && error.contains("refusing"),
                "byte {at}: {error}"
            );
            assert_eq!(fs::read(scratch.log()).unwrap(), damaged, "left as found");
        }
    }

    #[test]
    fn records_out_of_sequence_are_refused() {
        let scratch = Scratch::new("sequence");
        let (full, ends, _) = three_records(&scratch);
        // The first record again at the end: framed well, but a replay of old data.
        let mut replayed = full.clone();
        replayed.extend_from_slice(&full[ends[0] as usize..ends[1] as usize]);
        fs::write(scratch.log(), &replayed).unwrap();
        let error = open_error(&scratch.journal());
        assert!(error.contains("sequence number 1 where 4"), "{error}");
    }

    #[test]
    fn compaction_keeps_the_records() {
        let scratch = Scratch::new("compaction");
        let options = Options {
            compact_min_log_bytes: u64::MAX,
            compact_every_records: Some(3),
            ..Options::default()
        };
        let (mut journal, _) = Journal::open_with(scratch.journal(), options.clone()).unwrap();
        let mut model = BTreeMap::new();
        for i in 0..20 {
            let mut batch = vec![put(&format!("key{}", i % 7), &format!("value{i}"))];
            if i % 4 == 0 {
                batch.push(delete(&format!("key{}", (i + 3) % 7)));
            }
            journal.append(&batch).unwrap();
            apply(&mut model, &batch);
            assert_eq!(journal.records(), &model);
        }
        assert_eq!(journal.generation(), 6);
        assert_eq!(
            mode(&scratch.snapshot()),
            0o600,
            "the snapshot is root's alone"
        );
        drop(journal);
        let (journal, found) = Journal::open_with(scratch.journal(), options).unwrap();
        assert_eq!(found, model);
        assert_eq!(journal.opened().generation, 6);
        assert_eq!(journal.opened().log_records, 2);
        let mut files: Vec<_> = fs::read_dir(scratch.journal())
            .unwrap()
            .map(|entry| entry.unwrap().file_name().into_string().unwrap())
            .collect();
        files.sort();
        assert_eq!(files, [LOG_FILE, SNAPSHOT_FILE]);
    }

    #[test]
    fn compaction_by_size_is_amortized() {
        let scratch = Scratch::new("amortized");
        let options = Options {
            compact_min_log_bytes: 2048,
            compact_log_ratio: 4,
            compact_every_records: None,
        };
        let (mut journal, _) = Journal::open_with(scratch.journal(), options.clone()).unwrap();
        let mut model = BTreeMap::new();
        let mut snapshot_bytes_written = 0;
        let mut log_bytes_written = 0;
        for i in 0..400 {
            let batch = [put(&format!("tenant/{}", i % 40), &"x".repeat(i % 50))];
            let before = (journal.generation(), journal.log_len());
            journal.append(&batch).unwrap();
            apply(&mut model, &batch);
            if journal.generation() != before.0 {
                snapshot_bytes_written += fs::metadata(scratch.snapshot()).unwrap().len();
                log_bytes_written += before.1 - LOG_HEADER_LEN;
            }
        }
        assert!(journal.generation() >= 2, "{}", journal.generation());
        assert!(
            snapshot_bytes_written * 4 <= log_bytes_written + 4 * 2048,
            "snapshots cost {snapshot_bytes_written} bytes for {log_bytes_written} of log"
        );
        drop(journal);
        assert_eq!(
            Journal::open_with(scratch.journal(), options).unwrap().1,
            model
        );
    }

    /// A journal with a snapshot and records in its log; returns the records.
    fn compacted_with_log(scratch: &Scratch) -> BTreeMap<String, String> {
        let (mut journal, _) = Journal::open(scratch.journal()).unwrap();
        journal.append(&[put("a", "1"), put("b", "2")]).unwrap();
        journal.compact().unwrap();
        journal.append(&[delete("a"), put("c", "3")]).unwrap();
        journal.records().clone()
    }

    #[test]
    fn a_crash_before_the_snapshot_rename_leaves_the_old_state() {
        let scratch = Scratch::new("crash-before-rename");
        let model = compacted_with_log(&scratch);
        let old_snapshot = fs::read(scratch.snapshot()).unwrap();
        let old_log = fs::read(scratch.log()).unwrap();
        let (mut journal, _) = Journal::open(scratch.journal()).unwrap();
        journal.compact().unwrap();
        let new_snapshot = fs::read(scratch.snapshot()).unwrap();
        drop(journal);
        // The new snapshot written to its temporary file, not yet renamed; a log restart
        // too, as another crash could leave.
        fs::write(scratch.snapshot(), &old_snapshot).unwrap();
        fs::write(scratch.log(), &old_log).unwrap();
        let snapshot_tmp = scratch.journal().join(".snapshot.4242.tmp");
        let log_tmp = scratch.journal().join(".log.4242.tmp");
        fs::write(&snapshot_tmp, &new_snapshot[..new_snapshot.len() / 2]).unwrap();
        fs::write(&log_tmp, log_header(3)).unwrap();
        let (journal, found) = Journal::open(scratch.journal()).unwrap();
        assert_eq!(found, model);
        assert_eq!(journal.opened().generation, 1);
        assert_eq!(journal.opened().temporary_files_removed, 2);
        assert!(!snapshot_tmp.exists() && !log_tmp.exists());
    }

    #[test]
    fn a_crash_between_snapshot_and_log_restart_replays_the_snapshot() {
        let scratch = Scratch::new("crash-after-rename");
        let model = compacted_with_log(&scratch);
        let old_log = fs::read(scratch.log()).unwrap();
        let (mut journal, _) = Journal::open(scratch.journal()).unwrap();
        journal.compact().unwrap();
        drop(journal);
        // Snapshot generation 2 kept; the log still generation 1 and its records.
        fs::write(scratch.log(), &old_log).unwrap();
        let (mut journal, found) = Journal::open(scratch.journal()).unwrap();
        assert_eq!(
            found, model,
            "the writes of the old log are in the snapshot"
        );
        assert!(journal.opened().stale_log_replaced);
        assert_eq!(journal.opened().generation, 2);
        assert_eq!(journal.log_len(), LOG_HEADER_LEN);
        journal.append(&[put("d", "4")]).unwrap();
        drop(journal);
        let (journal, found) = Journal::open(scratch.journal()).unwrap();
        let mut expected = model;
        expected.insert("d".into(), "4".into());
        assert_eq!(found, expected, "appends after the restart are kept");
        assert!(!journal.opened().stale_log_replaced);
    }

    #[test]
    fn lost_or_swapped_files_are_refused() {
        let scratch = Scratch::new("lost");
        compacted_with_log(&scratch);
        let snapshot = fs::read(scratch.snapshot()).unwrap();
        let log = fs::read(scratch.log()).unwrap();

        fs::remove_file(scratch.log()).unwrap();
        let error = open_error(&scratch.journal());
        assert!(error.contains("log is missing"), "{error}");
        fs::write(scratch.log(), &log).unwrap();

        fs::remove_file(scratch.snapshot()).unwrap();
        let error = open_error(&scratch.journal());
        assert!(
            error.contains("follows snapshot generation 1") && error.contains("is generation 0"),
            "{error}"
        );

        let mut damaged = snapshot.clone();
        damaged[30] ^= 1;
        fs::write(scratch.snapshot(), &damaged).unwrap();
        let error = open_error(&scratch.journal());
        assert!(error.contains("snapshot is damaged"), "{error}");
        assert!(error.contains("fails its checksum"), "{error}");

        fs::write(scratch.snapshot(), &snapshot).unwrap();
        let mut newer = log.clone();
        newer[8..12].copy_from_slice(&2u32.to_le_bytes());
        let crc = crc32c(&[&newer[..20]]);
        newer[20..24].copy_from_slice(&crc.to_le_bytes());
        fs::write(scratch.log(), &newer).unwrap();
        let error = open_error(&scratch.journal());
        assert!(error.contains("format version 2"), "{error}");

        fs::write(scratch.log(), b"{\"tenants\": []}").unwrap();
        let error = open_error(&scratch.journal());
        assert!(error.contains("not a tenet journal log"), "{error}");

        fs::write(scratch.log(), &log).unwrap();
        Journal::open(scratch.journal()).unwrap();
    }

    #[derive(Clone, Debug)]
    enum Step {
        /// Keys by number; a value by its length, or a delete.
        Batch(Vec<(u8, Option<u8>)>),
        Reopen,
        Compact,
        /// The log cut at this fraction (of `u16::MAX`) of its records.
        Crash(u16),
        Garbage(Vec<u8>),
        /// A compaction whose crash left the log before it beside the new snapshot.
        InterruptedCompaction,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            8 => vec((0u8..12, proptest::option::of(any::<u8>())), 1..5).prop_map(Step::Batch),
            1 => Just(Step::Reopen),
            1 => Just(Step::Compact),
            1 => any::<u16>().prop_map(Step::Crash),
            1 => vec(any::<u8>(), 1..40).prop_map(Step::Garbage),
            1 => Just(Step::InterruptedCompaction),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

        #[test]
        fn replay_matches_a_model(
            every in proptest::option::of(1u64..10),
            min_log_bytes in 0u64..2048,
            ratio in 0u64..6,
            steps in vec(step(), 1..60),
        ) {
            let scratch = Scratch::new("model");
            let dir = scratch.journal();
            let options = Options {
                compact_min_log_bytes: min_log_bytes,
                compact_log_ratio: ratio,
                compact_every_records: every,
            };
            let (mut journal, _) = Journal::open_with(&dir, options.clone()).unwrap();
            let mut model = BTreeMap::new();
            // What the log replays to when cut at each record's end.
            let mut log_states = vec![(journal.log_len(), model.clone())];
            for step in steps {
                match step {
                    Step::Batch(writes) => {
                        let batch: Vec<Write> = writes
                            .iter()
                            .map(|&(key, value)| match value {
                                Some(len) => Write::Put(
                                    format!("tenant/{key}"),
                                    format!("{{\"pad\":\"{}\"}}", "x".repeat(len.into())),
                                ),
                                None => Write::Delete(format!("tenant/{key}")),
                            })
                            .collect();
                        let generation = journal.generation();
                        journal.append(&batch).unwrap();
                        apply(&mut model, &batch);
                        if journal.generation() != generation {
                            log_states.clear();
                        }
                        log_states.push((journal.log_len(), model.clone()));
                    }
                    Step::Reopen => {
                        drop(journal);
                        let (reopened, found) = Journal::open_with(&dir, options.clone()).unwrap();
                        prop_assert_eq!(&found, &model);
                        prop_assert_eq!(reopened.opened().torn_tail_bytes, None);
                        journal = reopened;
                    }
                    Step::Compact => {
                        journal.compact().unwrap();
                        let (_, snapshot) = decode_snapshot(&fs::read(scratch.snapshot()).unwrap()).unwrap();
                        prop_assert_eq!(&snapshot, &model);
                        log_states = vec![(journal.log_len(), model.clone())];
                    }
                    Step::Crash(fraction) => {
                        drop(journal);
                        let full = fs::metadata(scratch.log()).unwrap().len();
                        let cut = LOG_HEADER_LEN
                            + (full - LOG_HEADER_LEN) * u64::from(fraction) / u64::from(u16::MAX);
                        set_len(&scratch.log(), cut);
                        log_states.retain(|(end, _)| *end <= cut);
                        let (kept, state) = log_states.last().unwrap().clone();
                        let (reopened, found) = Journal::open_with(&dir, options.clone()).unwrap();
                        prop_assert_eq!(&found, &state);
                        let torn = (cut > kept).then_some(cut - kept);
                        prop_assert_eq!(reopened.opened().torn_tail_bytes, torn);
                        model = state;
                        journal = reopened;
                    }
                    Step::Garbage(bytes) => {
                        drop(journal);
                        append_bytes(&scratch.log(), &bytes);
                        let (reopened, found) = Journal::open_with(&dir, options.clone()).unwrap();
                        prop_assert_eq!(&found, &model);
                        prop_assert_eq!(reopened.opened().torn_tail_bytes, Some(bytes.len() as u64));
                        journal = reopened;
                    }
                    Step::InterruptedCompaction => {
                        let old_log = fs::read(scratch.log()).unwrap();
                        journal.compact().unwrap();
                        drop(journal);
                        fs::write(scratch.log(), &old_log).unwrap();
                        let (reopened, found) = Journal::open_with(&dir, options.clone()).unwrap();
                        prop_assert_eq!(&found, &model);
                        prop_assert!(reopened.opened().stale_log_replaced);
                        log_states = vec![(reopened.log_len(), model.clone())];
                        journal = reopened;
                    }
                }
                prop_assert_eq!(journal.records(), &model);
            }
            drop(journal);
            let (mut journal, found) = Journal::open_with(&dir, options).unwrap();
            prop_assert_eq!(&found, &model);
            journal.compact().unwrap();
            let (generation, snapshot) =
                decode_snapshot(&fs::read(scratch.snapshot()).unwrap()).unwrap();
            prop_assert_eq!(generation, journal.generation());
            prop_assert_eq!(&snapshot, &found, "the snapshot holds what snapshot and log replayed");
        }
    }

    const KILL_CHILD_ENV: &str = "TENET_JOURNAL_KILL_CHILD";
    const KILL_WRITES: usize = 1000;

    /// The `index`th write of the kill test: puts, deletes of earlier keys, and a key
    /// rewritten often, in batches of one to three.
    fn kill_batch(index: usize) -> Vec<Write> {
        let mut batch = vec![put(
            &format!("tenant/{index}"),
            &format!("{{\"id\":{index},\"pad\":\"{}\"}}", "x".repeat(index % 97)),
        )];
        if index % 5 == 4 {
            batch.push(delete(&format!("tenant/{}", index - 3)));
        }
        if index.is_multiple_of(3) {
            batch.push(put("counter", &index.to_string()));
        }
        batch
    }

    fn kill_state(writes: usize) -> BTreeMap<String, String> {
        let mut state = BTreeMap::new();
        for index in 0..writes {
            apply(&mut state, &kill_batch(index));
        }
        state
    }

    /// The child of [`acknowledged_writes_survive_kill_9`]; nothing without its variable.
    #[test]
    fn kill_child_role() {
        let Some(dir) = std::env::var_os(KILL_CHILD_ENV) else {
            return;
        };
        // Compactions often, so that kills land in them too.
        let options = Options {
            compact_min_log_bytes: 16 << 10,
            compact_log_ratio: 1,
            compact_every_records: Some(64),
        };
        let (mut journal, found) = Journal::open_with(dir, options).unwrap();
        assert!(found.is_empty());
        let stdout = std::io::stdout();
        for index in 0..KILL_WRITES {
            journal.append(&kill_batch(index)).unwrap();
            let mut out = stdout.lock();
            writeln!(out, "acknowledged {index}").unwrap();
            out.flush().unwrap();
        }
    }

    #[test]
    fn acknowledged_writes_survive_kill_9() {
        let exe = std::env::current_exe().unwrap();
        let rounds = [
            (1, 0),
            (60, 150),
            (128, 900),
            (190, 0),
            (333, 40),
            (450, 300),
            (700, 2500),
            (950, 100),
        ];
        for (round, (kill_at, delay_us)) in rounds.into_iter().enumerate() {
            let scratch = Scratch::new("kill");
            let mut child = Command::new(&exe)
                .args([
                    "--exact",
                    "store::journal::tests::kill_child_role",
                    "--nocapture",
                    "--test-threads=1",
                ])
                .env(KILL_CHILD_ENV, scratch.journal())
                .stdout(Stdio::piped())
                .stderr(Stdio::null())
                .spawn()
                .unwrap();
            let mut acknowledged = 0;
            let mut killed = false;
            for line in BufReader::new(child.stdout.take().unwrap()).lines() {
                let line = line.unwrap();
                // libtest may start the line with its own "test ... " before the child's.
                let Some((_, index)) = line.split_once("acknowledged ") else {
                    continue;
                };
                let index: usize = index.parse().unwrap();
                assert_eq!(index, acknowledged, "acknowledgements in order");
                acknowledged = index + 1;
                if !killed && acknowledged >= kill_at {
                    std::thread::sleep(Duration::from_micros(delay_us));
                    child.kill().unwrap();
                    killed = true;
                }
                // Lines written before the kill are still read: they were acknowledged.
            }
            child.wait().unwrap();
            let (journal, found) = Journal::open(scratch.journal()).unwrap();
            let in_flight = kill_state(acknowledged + 1);
            assert!(
                found == kill_state(acknowledged)
                    || (acknowledged < KILL_WRITES && found == in_flight),
                "round {round}: {acknowledged} writes acknowledged, the journal holds {} records",
                found.len()
            );
            eprintln!(
                "round {round}: killed after {acknowledged} acknowledged writes, generation {}, \
                 {:?}",
                journal.generation(),
                journal.opened()
            );
        }
    }

    /// Figures for the record, not a test: `cargo test -p control --release journal_figures
    /// -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn journal_figures() {
        let scratch = Scratch::new("figures");
        let options = Options {
            compact_min_log_bytes: u64::MAX,
            ..Options::default()
        };
        let (mut journal, _) = Journal::open_with(scratch.journal(), options.clone()).unwrap();
        let mut times = Vec::new();
        for i in 0..1000 {
            let batch = [
                put(
                    &format!("tenant/{i}"),
                    &format!(r#"{{"id":{i},"vni":{}}}"#, 5000 + i),
                ),
                delete(&format!("port/{i}")),
            ];
            let started = Instant::now();
            journal.append(&batch).unwrap();
            times.push(started.elapsed());
        }
        times.sort();
        eprintln!(
            "append of a 2-write batch: median {:?}, p99 {:?}, max {:?}",
            times[times.len() / 2],
            times[times.len() * 99 / 100],
            times[times.len() - 1]
        );

        let value = r#"{"name":"tenant-000000","id":0,"subnets":["10.0.0.0/24"],"vni":5000,"gateway":"10.0.0.1"}"#;
        for chunk in (0..100_000).collect::<Vec<_>>().chunks(1000) {
            let batch: Vec<Write> = chunk
                .iter()
                .map(|i| put(&format!("tenant/{i:06}"), value))
                .collect();
            journal.append(&batch).unwrap();
        }
        let records = journal.records().len();
        let started = Instant::now();
        journal.compact().unwrap();
        let compaction = started.elapsed();
        let snapshot = fs::metadata(scratch.snapshot()).unwrap().len();
        drop(journal);
        let started = Instant::now();
        let (_, found) = Journal::open_with(scratch.journal(), options).unwrap();
        eprintln!(
            "compaction of {records} records ({snapshot} bytes of snapshot): {compaction:?}; \
             open of that snapshot: {:?} ({} records)",
            started.elapsed(),
            found.len()
        );
    }
}
