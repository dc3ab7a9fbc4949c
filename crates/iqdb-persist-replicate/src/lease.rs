//! The writer lease: one replicator per replica prefix.
//!
//! The lease is one JSON object (`PREFIX/lease`). It is taken with a
//! conditional create (no lease yet) or, once expired or released, with a
//! conditional update on the ETag that was read; renewed with conditional
//! updates; released by writing it back expired. Each taking increments the
//! epoch, which the new holder then writes into the manifest (fencing: see
//! docs/REPLICATION.md).

use std::sync::Arc;
use std::time::{Duration, Instant};

use object_store::PutMode;
use serde::{Deserialize, Serialize};

use crate::clock::Clock;
use crate::error::{ReplicateError, Result};
use crate::manifest::LEASE_KEY;
use crate::remote::{Fetched, Remote, update_mode};

/// What the lease object says.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaseRecord {
    /// The holder (host, process, random tag).
    pub owner: String,
    /// Incremented by every taking.
    pub epoch: u64,
    /// When it expires unless renewed (Unix milliseconds, holder's clock).
    pub expires_at_ms: u64,
    /// Its time to live.
    pub ttl_ms: u64,
    /// Whether the holder gave it up.
    pub released: bool,
    /// The holder's host name.
    pub host: String,
    /// The holder's boot id (Linux), to tell a dead local holder.
    pub boot_id: String,
    /// The holder's process id.
    pub pid: u32,
    /// The holder's process start time (Linux clock ticks since boot).
    pub start_time: u64,
    /// The holder's PID namespace (`/proc/self/ns/pid`, e.g.
    /// `pid:[4026531836]`); empty when unknown (older writers). A process
    /// id means something only inside its namespace: containers sharing a
    /// host name and boot id are told apart by it.
    #[serde(default)]
    pub pid_ns: String,
    /// The holder's user id (Linux), empty-as-`None` for older writers.
    #[serde(default)]
    pub uid: Option<u32>,
}

/// Who this process is.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub owner: String,
    pub host: String,
    pub boot_id: String,
    pub pid: u32,
    pub start_time: u64,
    pub pid_ns: String,
    pub uid: Option<u32>,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 (starttime) of `/proc/PID/stat`.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = stat.get(stat.rfind(')')? + 2..)?;
    after.split(' ').nth(19)?.parse().ok()
}

fn own_pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().into_owned())
        .unwrap_or_default()
}

fn own_uid() -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        std::fs::metadata("/proc/self").ok().map(|m| m.uid())
    }
    #[cfg(not(unix))]
    {
        None
    }
}

impl Identity {
    pub(crate) fn current() -> Self {
        let host = read_trimmed("/proc/sys/kernel/hostname");
        let host = if host.is_empty() {
            "unknown-host".to_string()
        } else {
            host
        };
        let pid = std::process::id();
        let tag = crc32fast::hash(
            format!(
                "{pid}{:?}{:?}",
                Instant::now(),
                std::time::SystemTime::now()
            )
            .as_bytes(),
        );
        Self {
            owner: format!("{host}:{pid}:{tag:08x}"),
            host,
            boot_id: read_trimmed("/proc/sys/kernel/random/boot_id"),
            pid,
            start_time: process_start_time(pid).unwrap_or(0),
            pid_ns: own_pid_namespace(),
            uid: own_uid(),
        }
    }

    fn record(&self, epoch: u64, expires_at_ms: u64, ttl_ms: u64) -> LeaseRecord {
        LeaseRecord {
            owner: self.owner.clone(),
            epoch,
            expires_at_ms,
            ttl_ms,
            released: false,
            host: self.host.clone(),
            boot_id: self.boot_id.clone(),
            pid: self.pid,
            start_time: self.start_time,
            pid_ns: self.pid_ns.clone(),
            uid: self.uid,
        }
    }
}

impl LeaseRecord {
    /// Whether the holder is a process of this machine's current boot, in
    /// this process's PID namespace, that is no longer running (its lease
    /// can be taken at once).
    #[must_use]
    pub fn holder_is_dead_here(&self) -> bool {
        self.holder_is_dead_for(&Identity::current())
    }

    fn holder_is_dead_for(&self, me: &Identity) -> bool {
        if me.boot_id.is_empty() || me.boot_id != self.boot_id || self.host != me.host {
            return false;
        }
        // Containers with host networking share the host name and boot id,
        // and their processes' ids overlap: only a holder in our own PID
        // namespace can be looked up in our /proc.
        if me.pid_ns.is_empty() || me.pid_ns != self.pid_ns {
            return false;
        }
        // Under `hidepid`, other users' processes are invisible, which
        // looks like "gone": trust the lookup only for our own user, or
        // when /proc shows everyone's (pid 1 is visible).
        let same_user = me.uid.is_some() && me.uid == self.uid;
        if !same_user && std::fs::metadata("/proc/1/stat").is_err() {
            return false;
        }
        match process_start_time(self.pid) {
            None => true,
            Some(t) => t != self.start_time,
        }
    }
}

/// Whether a lease owner (as in [`LeaseRecord::owner`] and
/// [`ReplicateError::LeaseHeld`]) is this very process: an earlier attempt
/// to take the lease whose write landed after its request timed out (it
/// expires within its time to live; a daemon waits for it).
#[must_use]
pub fn owned_by_this_process(owner: &str) -> bool {
    let me = Identity::current();
    owner.starts_with(&format!("{}:{}:", me.host, me.pid))
}

/// Bytes a lease object may have; anything larger is not ours.
pub(crate) const MAX_LEASE_BYTES: u64 = 64 << 10;

fn parse(remote: &Remote, fetched: &Fetched) -> Result<LeaseRecord> {
    serde_json::from_slice(&fetched.bytes)
        .map_err(|e| ReplicateError::corrupt(remote.path(LEASE_KEY).to_string(), e.to_string()))
}

fn lease_store_error(what: &str, remote: &Remote, e: object_store::Error) -> ReplicateError {
    ReplicateError::store(format!("{what} the lease {}", remote.path(LEASE_KEY)), e)
}

/// A held lease.
#[derive(Debug)]
pub(crate) struct Lease {
    pub record: LeaseRecord,
    e_tag: Option<String>,
    version: Option<String>,
    ttl: Duration,
    clock: Arc<dyn Clock>,
    /// Until when this process may act on it (the clock's monotonic time,
    /// measured from when the last successful write was sent).
    valid_until: Duration,
    renewed_at: Duration,
}

impl Lease {
    /// Takes the lease, with an epoch above `min_epoch`.
    pub(crate) fn acquire(
        remote: &Remote,
        me: &Identity,
        ttl: Duration,
        min_epoch: u64,
        clock: Arc<dyn Clock>,
    ) -> Result<Self> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        let first_sent = clock.monotonic();
        for _ in 0..5 {
            let existing = fetch(remote)?;
            let (mode, epoch) = match existing {
                None => (PutMode::Create, min_epoch.saturating_add(1)),
                Some((old, fetched)) => {
                    if old.owner == me.owner && old.epoch > min_epoch && !old.released {
                        // Our own earlier attempt landed although its answer
                        // was lost: the lease is ours.
                        return Ok(Self {
                            record: old,
                            e_tag: fetched.e_tag.clone(),
                            version: fetched.version.clone(),
                            ttl,
                            valid_until: first_sent + ttl,
                            renewed_at: first_sent,
                            clock,
                        });
                    }
                    let now = clock.unix_ms();
                    if !old.released && old.expires_at_ms > now && !old.holder_is_dead_for(me) {
                        return Err(ReplicateError::LeaseHeld {
                            owner: old.owner,
                            expires_in_ms: old.expires_at_ms - now,
                        });
                    }
                    (
                        update_mode(fetched.e_tag.clone(), fetched.version.clone()),
                        old.epoch.max(min_epoch).saturating_add(1),
                    )
                }
            };
            let sent = clock.monotonic();
            let record = me.record(epoch, clock.unix_ms().saturating_add(ttl_ms), ttl_ms);
            let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
            match remote.put(LEASE_KEY, bytes, mode) {
                Ok(put) => {
                    return Ok(Self {
                        record,
                        e_tag: put.e_tag,
                        version: put.version,
                        ttl,
                        valid_until: sent + ttl,
                        renewed_at: sent,
                        clock,
                    });
                }
                // Someone else got there first, or our own write landed and
                // its answer was lost: look again.
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {}
                Err(e) => {
                    // The write may have landed with its answer lost: if the
                    // lease now names us, it is ours (the next loop adopts
                    // it); otherwise report the error.
                    match fetch(remote) {
                        Ok(Some((r, _))) if r.owner == me.owner => {}
                        _ => return Err(lease_store_error("taking", remote, e)),
                    }
                }
            }
        }
        let holder = remote
            .get_capped(LEASE_KEY, MAX_LEASE_BYTES)?
            .and_then(|f| serde_json::from_slice::<LeaseRecord>(&f.bytes).ok());
        Err(ReplicateError::LeaseHeld {
            owner: holder.map_or_else(|| "unknown".to_string(), |r| r.owner),
            expires_in_ms: 0,
        })
    }

    /// The epoch.
    pub(crate) fn epoch(&self) -> u64 {
        self.record.epoch
    }

    /// Whether the lease is still ours by our own clock (nobody can have
    /// taken it yet).
    pub(crate) fn is_valid(&self) -> bool {
        self.clock.monotonic() < self.valid_until
    }

    /// Whether it is time to renew: a third of the time to live passed
    /// since the last renewal (or the lease ran out).
    pub(crate) fn renewal_due(&self) -> bool {
        self.clock.monotonic() >= self.renewed_at + self.ttl / 3
    }

    /// How long until the next renewal is due.
    pub(crate) fn until_renewal(&self) -> Duration {
        (self.renewed_at + self.ttl / 3).saturating_sub(self.clock.monotonic())
    }

    /// Renews the lease when due. Afterwards the lease is valid, or an
    /// error says why not.
    pub(crate) fn keep(&mut self, remote: &Remote) -> Result<()> {
        if self.renewal_due() || !self.is_valid() {
            self.renew(remote)?;
        }
        Ok(())
    }

    /// Extends the lease: a conditional update on the version last
    /// written. It works after the lease ran out too, as long as nobody
    /// took it in the meantime (the version still matches): then this
    /// replicator simply holds it again.
    ///
    /// Only another holder's record means the lease is lost
    /// ([`ReplicateError::LeaseLost`]); a failed precondition caused by
    /// our own earlier write (whose answer was lost, or which the client
    /// retried after it landed) is recognised and the version adopted. A
    /// store error is returned as it is (transient: try again later).
    pub(crate) fn renew(&mut self, remote: &Remote) -> Result<()> {
        let sent = self.clock.monotonic();
        self.write(remote, false, sent)
    }

    /// Gives the lease up, so that the next replicator need not wait.
    pub(crate) fn release(mut self, remote: &Remote) -> Result<()> {
        self.release_in_place(remote)
    }

    /// As [`release`](Self::release), leaving the (released) lease in
    /// place.
    pub(crate) fn release_in_place(&mut self, remote: &Remote) -> Result<()> {
        let sent = self.clock.monotonic();
        match self.write(remote, true, sent) {
            // Someone else holds it: nothing of ours to give up.
            Err(ReplicateError::LeaseLost { .. }) => Ok(()),
            other => other,
        }
    }

    fn write(&mut self, remote: &Remote, release: bool, sent: Duration) -> Result<()> {
        for _ in 0..4 {
            let mut record = self.record.clone();
            record.released = release;
            record.expires_at_ms = if release {
                self.clock.unix_ms()
            } else {
                self.clock.unix_ms().saturating_add(record.ttl_ms)
            };
            let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
            let mode = if self.e_tag.is_none() && self.version.is_none() {
                PutMode::Create
            } else {
                update_mode(self.e_tag.clone(), self.version.clone())
            };
            match remote.put(LEASE_KEY, bytes, mode) {
                Ok(put) => {
                    self.record = record;
                    self.e_tag = put.e_tag;
                    self.version = put.version;
                    self.renewed_at = sent;
                    self.valid_until = sent + self.ttl;
                    return Ok(());
                }
                Err(
                    object_store::Error::Precondition { .. }
                    | object_store::Error::AlreadyExists { .. },
                ) => {
                    // Who wrote it last?
                    match fetch(remote)? {
                        None => {
                            // The lease object is gone: nobody holds the
                            // lease; create it again with our epoch (a new
                            // holder would have a higher one).
                            self.e_tag = None;
                            self.version = None;
                        }
                        Some((found, fetched)) => {
                            if found.owner != self.record.owner || found.epoch != self.record.epoch
                            {
                                return Err(ReplicateError::LeaseLost {
                                    reason: format!(
                                        "replicator {} took the lease over (epoch {}; ours {})",
                                        found.owner, found.epoch, self.record.epoch
                                    ),
                                });
                            }
                            // Our own write landed, its answer was lost:
                            // adopt its version and write again.
                            tracing::debug!("lease: our own earlier write landed; adopting it");
                            self.e_tag = fetched.e_tag;
                            self.version = fetched.version;
                        }
                    }
                }
                Err(e) => return Err(lease_store_error("renewing", remote, e)),
            }
        }
        Err(lease_store_error(
            "renewing",
            remote,
            object_store::Error::Generic {
                store: "lease",
                source: "the lease object kept changing under its own holder".into(),
            },
        ))
    }
}

/// Reads the lease object, if any.
pub(crate) fn read(remote: &Remote) -> Result<Option<LeaseRecord>> {
    Ok(fetch(remote)?.map(|(record, _)| record))
}

/// The lease object and its version; one that does not parse is read
/// twice more before it counts as damaged.
fn fetch(remote: &Remote) -> Result<Option<(LeaseRecord, Fetched)>> {
    let mut attempt = 0;
    loop {
        let Some(fetched) = remote.get_capped(LEASE_KEY, MAX_LEASE_BYTES)? else {
            return Ok(None);
        };
        match parse(remote, &fetched) {
            Ok(record) => return Ok(Some((record, fetched))),
            Err(_) if attempt < 2 => attempt += 1,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_holder_in_another_pid_namespace_is_never_taken_for_dead() {
        let me = Identity::current();
        if me.boot_id.is_empty() || me.pid_ns.is_empty() {
            return; // not Linux
        }
        // A process id that is free here.
        let free_pid = (400_000..4_000_000)
            .find(|p| process_start_time(*p).is_none())
            .unwrap_or(3_999_999);
        let mut holder = me.record(1, u64::MAX, 1000);
        holder.owner = "other".into();
        holder.pid = free_pid;
        holder.start_time = 12345;
        // Same namespace: the shortcut applies.
        assert!(holder.holder_is_dead_for(&me));
        // Another container, sharing host name and boot id.
        holder.pid_ns = "pid:[1]".into();
        assert!(!holder.holder_is_dead_for(&me));
        // An older writer that recorded no namespace.
        holder.pid_ns = String::new();
        assert!(!holder.holder_is_dead_for(&me));
    }
}
