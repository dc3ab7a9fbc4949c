//! `generations URL`: what a replica holds: its generations (snapshot,
//! sequence range, times, sizes) and who holds its lease.
//!
//! Requests time out after 5 s (`--timeout`), so that it fails fast when
//! the store does not answer.
//!
//! `--verify` downloads every listed object and checks it.
//!
//! Exit code: 0; 1 for a damaged manifest (or, with `--verify`, a damaged
//! or missing object); 3 for store errors or an empty
//! replica.

use clap::Args;
use comfy_table::Table;
use iqdb_persist_replicate::{ReplicateError, format_time};
use serde_json::json;

use crate::replicate::{StoreArgs, open_replica_with, replicate_error};
use crate::{CliResult, Context, Status, exit_codes, output};

/// Arguments of `generations`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist generations s3://backups/vectors
  iqdb-persist generations s3://backups/vectors --json | jq '.generations[].end_seq'
  iqdb-persist generations s3://backups/vectors --verify     # download and check every object

",
    exit_codes!()
))]
pub struct GenerationsArgs {
    /// The replica: s3://BUCKET/PREFIX, file:///DIR or memory://NAME.
    pub url: String,
    /// Also download every object the manifest lists and check its size,
    /// checksum and (for log segments) every frame; exit 1 if any is
    /// damaged or missing.
    #[arg(long)]
    pub verify: bool,
    /// Store flags.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `generations`.
///
/// # Errors
///
/// Store errors, a damaged manifest, an empty replica.
pub fn run(args: &GenerationsArgs, ctx: &mut Context<'_>) -> CliResult {
    // A listing is no reason to wait out a store that does not answer.
    let mut options = args.store.options();
    if options.timeout.is_none() {
        options.timeout = Some(std::time::Duration::from_secs(5));
        options.max_retries = Some(1);
    }
    let replica = open_replica_with(&args.url, options)?;
    let manifest = replica
        .manifest()
        .map_err(|e| replicate_error("reading the manifest", &e))?
        .ok_or_else(|| {
            replicate_error(
                "",
                &ReplicateError::NotFound {
                    what: format!("{}: no replica here (no manifest)", replica.url()),
                },
            )
        })?;
    let verified = if args.verify {
        Some(
            replica
                .verify(&crate::replicate::Bars::new(ctx.progress))
                .map_err(|e| replicate_error("verifying the replica", &e))?,
        )
    } else {
        None
    };
    let status = match &verified {
        Some(v) if !v.problems.is_empty() => Status::Corrupt,
        _ => Status::Healthy,
    };
    let verify_json = verified.as_ref().map(|v| {
        json!({
            "objects": v.objects,
            "bytes": v.bytes,
            "problems": v.problems.iter().map(|p| json!({"key": p.key, "reason": p.reason})).collect::<Vec<_>>(),
        })
    });
    let lease = replica
        .lease()
        .map_err(|e| replicate_error("reading the lease", &e))?;
    let unlisted = replica
        .unlisted_objects()
        .map_err(|e| replicate_error("listing the replica", &e))?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64);
    let lease_json = lease.as_ref().map(|l| {
        json!({
            "owner": l.owner,
            "epoch": l.epoch,
            "expires_at": format_time(l.expires_at_ms),
            "active": !l.released && l.expires_at_ms > now,
            "released": l.released,
        })
    });
    if ctx.json {
        let gens: Vec<_> = manifest
            .generations
            .iter()
            .map(|g| {
                json!({
                    "id": g.id,
                    "ordinal": g.ordinal,
                    "epoch": g.epoch,
                    "base_seq": g.base_seq,
                    "end_seq": g.end_seq(),
                    "created_at": format_time(g.created_at_ms),
                    "last_shipped_at": format_time(g.last_shipped_ms()),
                    "snapshot": {
                        "key": g.snapshot.key,
                        "bytes": g.snapshot.len,
                        "crc32": format!("{:08x}", g.snapshot.crc32),
                        "version": g.snapshot.version,
                    },
                    "segments": g.segments.iter().map(|s| json!({
                        "key": s.key,
                        "first_seq": s.first_seq,
                        "end_seq": s.end_seq,
                        "frames": s.frames,
                        "bytes": s.len,
                        "crc32": format!("{:08x}", s.crc32),
                        "shipped_at": format_time(s.shipped_at_ms),
                    })).collect::<Vec<_>>(),
                    "bytes": g.bytes(),
                })
            })
            .collect();
        let doc = json!({
            "url": replica.url(),
            "database": manifest.database,
            "epoch": manifest.epoch,
            "writer": manifest.writer,
            "updated_at": format_time(manifest.updated_at_ms),
            "lease": lease_json,
            "generations": gens,
            "unlisted_objects": unlisted,
            "verify": verify_json,
            "exit_code": status.code(),
        });
        output::write_json(ctx.out, &doc)?;
        return Ok(status);
    }
    let out = &mut *ctx.out;
    writeln!(out, "Replica {} of {}", replica.url(), manifest.database)?;
    output::kv(
        out,
        "manifest",
        format!(
            "epoch {}, written {} by {}",
            manifest.epoch,
            format_time(manifest.updated_at_ms),
            manifest.writer
        ),
    )?;
    match &lease {
        Some(l) if !l.released && l.expires_at_ms > now => output::kv(
            out,
            "lease",
            format!(
                "held by {} (epoch {}) until {}",
                l.owner,
                l.epoch,
                format_time(l.expires_at_ms)
            ),
        )?,
        Some(l) => output::kv(
            out,
            "lease",
            format!("free (last holder {}, epoch {})", l.owner, l.epoch),
        )?,
        None => output::kv(out, "lease", "none")?,
    }
    if !unlisted.is_empty() {
        output::kv(
            out,
            "unlisted objects",
            format!(
                "{} (interrupted or in-flight uploads; the next replicator removes stale ones)",
                unlisted.len()
            ),
        )?;
    }
    let mut table = Table::new();
    table.set_header(vec![
        "generation",
        "sequence numbers",
        "snapshot",
        "segments",
        "total",
        "created",
        "last shipped",
    ]);
    for g in &manifest.generations {
        let last = g.end_seq().saturating_sub(1);
        table.add_row(vec![
            g.id.clone(),
            if g.end_seq() > g.base_seq {
                format!(
                    "snapshot ≤ {}, log {}..={last}",
                    g.base_seq.saturating_sub(1),
                    g.base_seq
                )
            } else {
                format!("snapshot ≤ {}", g.base_seq.saturating_sub(1))
            },
            output::bytes(g.snapshot.len),
            g.segments.len().to_string(),
            output::bytes(g.bytes()),
            format_time(g.created_at_ms),
            format_time(g.last_shipped_ms()),
        ]);
    }
    writeln!(out, "{table}")?;
    writeln!(
        out,
        "{} generation(s); restore points from sequence {} to {}",
        manifest.generations.len(),
        manifest
            .generations
            .first()
            .map_or(0, |g| g.base_seq.saturating_sub(1)),
        manifest
            .generations
            .last()
            .map_or(0, |g| g.end_seq().saturating_sub(1))
    )?;
    if let Some(v) = &verified {
        if v.problems.is_empty() {
            writeln!(
                out,
                "Verified: {} object(s), {}, every checksum and frame intact",
                v.objects,
                output::bytes(v.bytes)
            )?;
        } else {
            writeln!(
                out,
                "DAMAGED: {} of {} object(s):",
                v.problems.len(),
                v.objects
            )?;
            for p in &v.problems {
                writeln!(out, "  {}: {}", p.key, p.reason)?;
            }
        }
    }
    Ok(status)
}
