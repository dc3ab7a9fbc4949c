//! The writer lease: one replicator per replica prefix.
//!
//! The lease is one JSON object (`PREFIX/lease`). It is taken with a
//! conditional create (no lease yet) or, once expired or released, with a
//! conditional update on the ETag that was read; renewed with conditional
//! updates; released by writing it back expired. Each taking increments the
//! epoch, which the new holder then writes into the manifest (fencing: see
//! docs/REPLICATION.md).

use std::time::{Duration, Instant};

use object_store::PutMode;
use serde::{Deserialize, Serialize};

use crate::error::{ReplicateError, Result};
use crate::manifest::LEASE_KEY;
use crate::remote::{Remote, update_mode};
use crate::unix_ms;

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
}

/// Who this process is.
#[derive(Debug, Clone)]
pub(crate) struct Identity {
    pub owner: String,
    pub host: String,
    pub boot_id: String,
    pub pid: u32,
    pub start_time: u64,
}

fn read_trimmed(path: &str) -> String {
    std::fs::read_to_string(path)
        .map(|s| s.trim().to_string())
        .unwrap_or_default()
}

/// Field 22 (starttime) of `/proc/PID/stat`.
fn process_start_time(pid: u32) -> Option<u64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    after.split(' ').nth(19)?.parse().ok()
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
        }
    }
}

impl LeaseRecord {
    /// Whether the holder is a process of this machine's current boot that
    /// is no longer running (its lease can be taken at once).
    #[must_use]
    pub fn holder_is_dead_here(&self) -> bool {
        let me = Identity::current();
        if me.boot_id.is_empty() || me.boot_id != self.boot_id || self.host != me.host {
            return false;
        }
        match process_start_time(self.pid) {
            None => true,
            Some(t) => t != self.start_time,
        }
    }
}

/// A held lease.
#[derive(Debug)]
pub(crate) struct Lease {
    pub record: LeaseRecord,
    e_tag: Option<String>,
    version: Option<String>,
    ttl: Duration,
    /// Until when this process may act on it (measured from when the last
    /// successful write was sent).
    valid_until: Instant,
    renewed_at: Instant,
}

impl Lease {
    /// Takes the lease, with an epoch above `min_epoch`.
    pub(crate) fn acquire(
        remote: &Remote,
        me: &Identity,
        ttl: Duration,
        min_epoch: u64,
    ) -> Result<Self> {
        let ttl_ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX);
        for _ in 0..5 {
            let existing = remote.get(LEASE_KEY)?;
            let (mode, epoch) = match &existing {
                None => (PutMode::Create, min_epoch + 1),
                Some(fetched) => {
                    let old: LeaseRecord = serde_json::from_slice(&fetched.bytes).map_err(|e| {
                        ReplicateError::corrupt(remote.path(LEASE_KEY).to_string(), e.to_string())
                    })?;
                    let now = unix_ms();
                    if !old.released && old.expires_at_ms > now && !old.holder_is_dead_here() {
                        return Err(ReplicateError::LeaseHeld {
                            owner: old.owner,
                            expires_in_ms: old.expires_at_ms - now,
                        });
                    }
                    (
                        update_mode(fetched.e_tag.clone(), fetched.version.clone()),
                        old.epoch.max(min_epoch) + 1,
                    )
                }
            };
            let sent = Instant::now();
            let record = LeaseRecord {
                owner: me.owner.clone(),
                epoch,
                expires_at_ms: unix_ms() + ttl_ms,
                ttl_ms,
                released: false,
                host: me.host.clone(),
                boot_id: me.boot_id.clone(),
                pid: me.pid,
                start_time: me.start_time,
            };
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
                    });
                }
                // Someone else got there first: look again.
                Err(
                    object_store::Error::AlreadyExists { .. }
                    | object_store::Error::Precondition { .. },
                ) => {}
                Err(e) => {
                    return Err(ReplicateError::store(
                        format!("taking the lease {}", remote.path(LEASE_KEY)),
                        e,
                    ));
                }
            }
        }
        let holder = remote
            .get(LEASE_KEY)?
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

    /// Fails once the lease may have expired (measured locally).
    pub(crate) fn check(&self) -> Result<()> {
        if Instant::now() >= self.valid_until {
            return Err(ReplicateError::LeaseLost {
                reason: format!(
                    "it was not renewed within its time to live ({:.1} s)",
                    self.ttl.as_secs_f64()
                ),
            });
        }
        Ok(())
    }

    /// Whether a third of the time to live passed since the last renewal.
    pub(crate) fn renewal_due(&self) -> bool {
        self.renewed_at.elapsed() >= self.ttl / 3
    }

    /// When the next renewal is due.
    pub(crate) fn next_renewal(&self) -> Instant {
        self.renewed_at + self.ttl / 3
    }

    /// Extends the lease (conditional on nobody having touched it).
    pub(crate) fn renew(&mut self, remote: &Remote) -> Result<()> {
        self.check()?;
        self.write(remote, false)
    }

    /// Gives the lease up, so that the next replicator need not wait.
    pub(crate) fn release(mut self, remote: &Remote) -> Result<()> {
        self.write(remote, true)
    }

    fn write(&mut self, remote: &Remote, release: bool) -> Result<()> {
        let sent = Instant::now();
        let mut record = self.record.clone();
        record.released = release;
        record.expires_at_ms = if release {
            unix_ms()
        } else {
            unix_ms() + record.ttl_ms
        };
        let bytes = serde_json::to_vec_pretty(&record).unwrap_or_default();
        let mode = update_mode(self.e_tag.clone(), self.version.clone());
        match remote.put(LEASE_KEY, bytes, mode) {
            Ok(put) => {
                self.record = record;
                self.e_tag = put.e_tag;
                self.version = put.version;
                self.renewed_at = sent;
                self.valid_until = sent + self.ttl;
                Ok(())
            }
            Err(object_store::Error::Precondition { .. }) => Err(ReplicateError::LeaseLost {
                reason: "another replicator took the lease over".to_string(),
            }),
            Err(e) => Err(ReplicateError::store(
                format!("renewing the lease {}", remote.path(LEASE_KEY)),
                e,
            )),
        }
    }
}

/// Reads the lease object, if any.
pub(crate) fn read(remote: &Remote) -> Result<Option<LeaseRecord>> {
    let Some(fetched) = remote.get(LEASE_KEY)? else {
        return Ok(None);
    };
    serde_json::from_slice(&fetched.bytes)
        .map(Some)
        .map_err(|e| ReplicateError::corrupt(remote.path(LEASE_KEY).to_string(), e.to_string()))
}
