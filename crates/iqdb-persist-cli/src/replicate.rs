//! `replicate PATH --to URL`: ships a WAL-mode database to object storage
//! continuously (see the `iqdb-persist-replicate` crate and
//! docs/REPLICATION.md), until Ctrl-C (or SIGTERM), `--once` or `--for`.
//!
//! Also the pieces `restore` and `generations` share: the store flags,
//! durations, and the exit status of a replication error.
//!
//! It is a daemon: store outages, timeouts and a lease that ran out while
//! the store did not answer are retried with backoff (logged on stderr;
//! `RUST_LOG` sets the level) until the store answers again, and the
//! replica catches up by itself.
//!
//! Exit code: 0 after a clean stop, 4 when another replicator holds the
//! replica's lease at start, 6 when another replicator took it over while
//! this one ran (fenced), 3 for store and network errors (at start, or in
//! the last round of `--once`/`--for`), 2 for a bad URL or duration, 5 for
//! a database that cannot be replicated (not WAL mode, WAL v1).

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use indicatif::ProgressBar;
use iqdb_persist_replicate::{
    Progress, Replica, ReplicaUrl, ReplicateError, Replicator, ReplicatorConfig, StoreOptions,
    SyncReport,
};
use serde_json::json;

use crate::output;
use crate::{CliError, CliResult, Context, Status, exit_codes};

/// Where the replica is and how to reach it.
#[derive(Debug, Clone, Args)]
pub struct StoreArgs {
    /// S3 endpoint, e.g. http://127.0.0.1:9000 (default: AWS's).
    #[arg(long, value_name = "URL", env = "AWS_ENDPOINT_URL")]
    pub endpoint: Option<String>,
    /// S3 region (default: us-east-1).
    #[arg(long, env = "AWS_REGION")]
    pub region: Option<String>,
    /// Allow a plain-HTTP endpoint (the variable takes true/false, 1/0,
    /// yes/no, on/off).
    #[arg(
        long,
        env = "AWS_ALLOW_HTTP",
        action = clap::ArgAction::SetTrue,
        value_parser = clap::builder::BoolishValueParser::new()
    )]
    pub allow_http: bool,
    /// How long one request may take, retries included (replicate and
    /// restore: 30s; generations: 5s, so that it fails fast when the store
    /// does not answer).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub timeout: Option<Duration>,
    /// Send unsigned requests (public buckets, local test servers) instead
    /// of finding credentials (AWS_* variables, web identity, container or
    /// instance metadata).
    #[arg(long)]
    pub no_sign_request: bool,
}

impl StoreArgs {
    /// The store options (credentials come from the environment).
    #[must_use]
    pub fn options(&self) -> StoreOptions {
        StoreOptions {
            endpoint: self.endpoint.clone(),
            region: self.region.clone(),
            allow_http: self.allow_http.then_some(true),
            timeout: self.timeout,
            unsigned: self.no_sign_request.then_some(true),
            ..StoreOptions::default()
        }
    }
}

/// Opens a replica, with a bad URL as a usage error.
pub(crate) fn open_replica(url: &str, store: &StoreArgs) -> Result<Replica, CliError> {
    open_replica_with(url, store.options())
}

/// Opens a replica with these options.
pub(crate) fn open_replica_with(url: &str, options: StoreOptions) -> Result<Replica, CliError> {
    let url = normalize_url(url)?;
    ReplicaUrl::parse(&url).map_err(|e| CliError::new(Status::Usage, e.to_string()))?;
    Replica::open(&url, &options).map_err(|e| replicate_error("", &e))
}

/// A `file://` URL with its path percent-decoded (`file:///tmp/a%20b` is
/// the directory `/tmp/a b`), parsed by the `url` crate; other URLs as
/// given.
pub(crate) fn normalize_url(text: &str) -> Result<String, CliError> {
    if !text.starts_with("file:") {
        return Ok(text.to_string());
    }
    let bad = |why: &str| CliError::new(Status::Usage, format!("{text}: {why}"));
    let parsed = url::Url::parse(text).map_err(|e| bad(&e.to_string()))?;
    if parsed
        .host_str()
        .is_some_and(|h| !h.is_empty() && h != "localhost")
    {
        return Err(bad(
            "a file:// URL names no host (file:///DIR for a local directory)",
        ));
    }
    if parsed.query().is_some() || parsed.fragment().is_some() {
        return Err(bad("a file:// URL has no query or fragment"));
    }
    let path = parsed
        .to_file_path()
        .map_err(|()| bad("not an absolute local path (file:///DIR)"))?;
    let path = path
        .to_str()
        .ok_or_else(|| bad("the decoded path is not UTF-8"))?;
    Ok(format!("file://{path}"))
}

/// A replication error as a command error, with its exit status.
pub(crate) fn replicate_error(context: &str, error: &ReplicateError) -> CliError {
    let status = match error {
        ReplicateError::Corrupt { .. } => Status::Corrupt,
        ReplicateError::LeaseHeld { .. } => Status::Locked,
        ReplicateError::LeaseLost { .. } | ReplicateError::Fenced { .. } => Status::Fenced,
        ReplicateError::Store { .. }
        | ReplicateError::Io { .. }
        | ReplicateError::Missing { .. }
        | ReplicateError::NotFound { .. } => Status::Io,
        ReplicateError::Persist { source, .. } => Status::of_error(source),
        _ => Status::Failed,
    };
    let message = if context.is_empty() {
        error.to_string()
    } else {
        format!("{context}: {error}")
    };
    CliError::new(status, message)
}

/// Parses a duration: humantime's forms (`500ms`, `10s`, `5min`, `2h`,
/// `7d`, `1h 30m`), plus what earlier versions took: a bare number of
/// seconds (`3`) and a decimal number with a unit (`2.5m`, `0.5s`).
///
/// # Errors
///
/// A message for anything else.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let text = text.trim();
    if let Ok(d) = humantime::parse_duration(text) {
        return Ok(d);
    }
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration (e.g. 500ms, 1s, 5m, 2h, 7d, 1h 30m)"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "" | "s" => value,
        "m" | "min" => value * 60.0,
        "h" => value * 3600.0,
        "d" => value * 86400.0,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (ms, s, m, h, d)")),
    };
    if !seconds.is_finite() || !(0.0..=1e10).contains(&seconds) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

/// Progress bars for transfers (hidden unless enabled).
pub(crate) struct Bars {
    enabled: bool,
    bar: Mutex<Option<ProgressBar>>,
}

impl Bars {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            bar: Mutex::new(None),
        }
    }
}

impl Progress for Bars {
    fn begin(&self, what: &str, total: u64) {
        // Small transfers (log segments) are not worth a bar.
        if !self.enabled || total < (1 << 20) {
            return;
        }
        let bar = output::bar(true, total, what);
        if let Ok(style) = indicatif::ProgressStyle::with_template(
            "{msg:<28} [{bar:30}] {bytes}/{total_bytes} ({bytes_per_sec}, {eta})",
        ) {
            bar.set_style(style.progress_chars("=> "));
        }
        *self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(bar);
    }

    fn advance(&self, bytes: u64) {
        if let Some(bar) = self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .as_ref()
        {
            bar.inc(bytes);
        }
    }

    fn end(&self) {
        if let Some(bar) = self
            .bar
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            bar.finish_and_clear();
        }
    }
}

/// Arguments of `replicate`.
#[derive(Debug, Args)]
#[command(after_help = concat!(
    "Examples:
  iqdb-persist replicate data/vectors.iqdb --to s3://backups/vectors
  iqdb-persist replicate data/vectors.iqdb --to s3://backups/vectors --once
  iqdb-persist replicate data/vectors.iqdb --to file:///mnt/backup/vectors --interval 5s --retain 3 --retain-for 7d
  iqdb-persist --json replicate data/vectors.iqdb --to s3://backups/vectors --status-every 10s
  iqdb-persist replicate data/vectors.iqdb --to s3://backups/vectors --metrics-addr 127.0.0.1:9187
  RUST_LOG=iqdb_persist_replicate=debug iqdb-persist replicate data/vectors.iqdb --to s3://backups/vectors

Endpoint, region and credentials come from --endpoint/--region/--allow-http and
AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_ALLOW_HTTP,
then web identity, container and instance-metadata credentials (object_store's chain);
--no-sign-request sends unsigned requests. Log output goes to stderr (RUST_LOG, default warn).

",
    exit_codes!()
))]
pub struct ReplicateArgs {
    /// The database's snapshot file (WAL mode; its log is PATH.wal).
    pub path: PathBuf,
    /// The replica: s3://BUCKET/PREFIX, file:///DIR or memory://NAME.
    #[arg(long, value_name = "URL")]
    pub to: String,
    /// How often new log frames are shipped.
    #[arg(long, default_value = "1s", value_parser = parse_duration)]
    pub interval: Duration,
    /// Keep at least this many newest generations (snapshot + log).
    #[arg(long, value_name = "N", default_value_t = 2)]
    pub retain: usize,
    /// Also keep what restoring to any moment this far back needs (e.g. 7d).
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub retain_for: Option<Duration>,
    /// The lease's time to live; another replicator may take over this long
    /// after this one stops renewing it.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub lease_ttl: Duration,
    /// Ship what is there now, then stop.
    #[arg(long, conflicts_with = "for_")]
    pub once: bool,
    /// Run this long, then stop.
    #[arg(long = "for", id = "for_", value_name = "DURATION", value_parser = parse_duration)]
    pub for_: Option<Duration>,
    /// Delete objects no manifest lists any more (merged-away segments,
    /// pruned generations, leftovers) only this long after, so that a
    /// restore that began earlier can still read them.
    #[arg(long, value_name = "DURATION", default_value = "5m", value_parser = parse_duration)]
    pub delete_grace: Duration,
    /// Serve Prometheus metrics (text format) on http://ADDR/metrics, e.g.
    /// 127.0.0.1:9187: replicated sequence number, commits, failed rounds,
    /// seconds since the last commit, bytes uploaded, whether it runs.
    #[arg(long, value_name = "ADDR")]
    pub metrics_addr: Option<std::net::SocketAddr>,
    /// Print a status line this often (one JSON object per line with
    /// --json): replicated sequence number, commits, errors, the last
    /// error, seconds since the last commit.
    #[arg(long, value_name = "DURATION", value_parser = parse_duration)]
    pub status_every: Option<Duration>,
    /// Store flags.
    #[command(flatten)]
    pub store: StoreArgs,
}

/// Runs `replicate`.
///
/// # Errors
///
/// A held lease, store errors, a database that cannot be replicated.
pub fn run(args: &ReplicateArgs, ctx: &mut Context<'_>) -> CliResult {
    if args.retain == 0 {
        return Err(CliError::new(Status::Usage, "--retain must be at least 1"));
    }
    let replica = open_replica(&args.to, &args.store)?;
    let url = replica.url().to_string();
    let mut config = ReplicatorConfig::new(&args.path);
    config.interval = args.interval;
    config.lease_ttl = args.lease_ttl;
    config.retain_generations = Some(args.retain);
    config.retain_for = args.retain_for;
    config.delete_grace = args.delete_grace;
    if let Some(addr) = args.metrics_addr {
        metrics_exporter_prometheus::PrometheusBuilder::new()
            .with_http_listener(addr)
            .install()
            .map_err(|e| {
                CliError::new(Status::Failed, format!("serving metrics on {addr}: {e}"))
            })?;
    }
    let stop = Arc::new(AtomicBool::new(args.once));
    if !args.once {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, stop.clone()).map_err(|e| {
                CliError::new(Status::Failed, format!("installing a signal handler: {e}"))
            })?;
        }
    }
    // A daemon that starts while the store does not answer waits for it
    // (with backoff, logged); `--once` and `--for` report the error.
    let mut replica = Some(replica);
    let mut pause = Duration::from_secs(1);
    let mut replicator = loop {
        let this = match replica.take() {
            Some(r) => r,
            None => open_replica(&args.to, &args.store)?,
        };
        match Replicator::new(this, config.clone()) {
            Ok(r) => break r,
            Err(
                e @ (ReplicateError::Store { .. }
                | ReplicateError::Io { .. }
                | ReplicateError::LeaseHeld { .. }),
            ) if !args.once
                && args.for_.is_none()
                && !stop.load(Ordering::SeqCst)
                && match &e {
                    // Only our own earlier attempt, which landed late.
                    ReplicateError::LeaseHeld { owner, .. } => {
                        iqdb_persist_replicate::owned_by_this_process(owner)
                    }
                    _ => true,
                } =>
            {
                tracing::warn!(error = %e, "cannot start replicating yet; retrying");
                let wake = Instant::now() + pause;
                while Instant::now() < wake && !stop.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                if stop.load(Ordering::SeqCst) {
                    return Err(replicate_error(
                        "stopped before replication could start",
                        &e,
                    ));
                }
                pause = (pause * 2).min(Duration::from_secs(30));
            }
            Err(e) => return Err(replicate_error(&args.path.display().to_string(), &e)),
        }
    };
    replicator.set_progress(Arc::new(Bars::new(ctx.progress)));
    let epoch = replicator.epoch();
    if !ctx.json {
        writeln!(
            ctx.out,
            "Replicating {} to {url} (lease epoch {epoch}, every {}){}",
            args.path.display(),
            output::duration(args.interval),
            if args.once { "" } else { "; Ctrl-C stops" }
        )?;
        ctx.out.flush()?;
    }
    let started = Instant::now();
    let until = args.for_.map(|d| started + d);
    let json = ctx.json;
    let out = &mut *ctx.out;
    let mut last_generation: Option<String> = None;
    let monitor = replicator.monitor();
    let status_every = args.status_every;
    let mut last_status = Instant::now();
    let metrics = args.metrics_addr.is_some();
    if metrics {
        export_metrics(&monitor.get());
    }
    let result = replicator.run(&stop, until, |report: &SyncReport| {
        if metrics {
            export_metrics(&monitor.get());
        }
        if let Some(every) = status_every
            && last_status.elapsed() >= every
        {
            last_status = Instant::now();
            let _ = print_status(out, json, &monitor.get());
        }
        if json || report.error.is_some() {
            return;
        }
        let _ = print_round(out, report, &mut last_generation);
    });
    let summary = result.map_err(|e| replicate_error("replication stopped", &e))?;
    let stopped = stop.load(Ordering::SeqCst);
    if ctx.json {
        let doc = ReplicateJson {
            path: args.path.display().to_string(),
            url: &url,
            epoch: summary.epoch,
            rounds: summary.rounds,
            generations_started: summary.generations,
            segments: summary.segments,
            frames: summary.frames,
            bytes: summary.bytes,
            commits: summary.commits,
            errors_retried: summary.errors,
            end_seq: summary.end_seq,
            elapsed_secs: started.elapsed().as_secs_f64(),
            stopped_by: if args.once {
                "once"
            } else if stopped {
                "signal"
            } else {
                "for"
            },
            exit_code: 0,
        };
        output::write_report(ctx.out, &doc)?;
    } else {
        writeln!(
            ctx.out,
            "Stopped after {}: {} round(s), {} generation(s) started, {} segment(s), {} frame(s), {}; \
             operations before sequence {} are in the replica. Lease released.",
            output::duration(started.elapsed()),
            summary.rounds,
            summary.generations,
            summary.segments,
            summary.frames,
            output::bytes(summary.bytes),
            summary.end_seq
        )?;
        if summary.errors > 0 {
            writeln!(
                ctx.out,
                "  WARNING  {} round(s) failed and were retried",
                summary.errors
            )?;
        }
    }
    Ok(Status::Healthy)
}

use std::io::Write;

/// `replicate --json`'s final document (field names as in earlier versions).
#[derive(serde::Serialize)]
struct ReplicateJson<'a> {
    path: String,
    url: &'a str,
    epoch: u64,
    rounds: u64,
    generations_started: u64,
    segments: u64,
    frames: u64,
    bytes: u64,
    commits: u64,
    errors_retried: u64,
    end_seq: u64,
    elapsed_secs: f64,
    /// `once`, `signal` or `for`.
    stopped_by: &'static str,
    exit_code: u8,
}

/// Sets the Prometheus gauges and counters from the status.
fn export_metrics(status: &iqdb_persist_replicate::ReplicatorStatus) {
    use iqdb_persist_replicate::Clock as _;
    let now = iqdb_persist_replicate::SystemClock.unix_ms();
    metrics::gauge!("iqdb_replica_running").set(if status.running { 1.0 } else { 0.0 });
    metrics::gauge!("iqdb_replica_epoch").set(status.epoch as f64);
    metrics::gauge!("iqdb_replica_end_seq").set(status.end_seq as f64);
    metrics::counter!("iqdb_replica_rounds_total").absolute(status.rounds);
    metrics::counter!("iqdb_replica_commits_total").absolute(status.commits);
    metrics::counter!("iqdb_replica_round_errors_total").absolute(status.errors);
    metrics::gauge!("iqdb_replica_consecutive_errors").set(status.consecutive_errors as f64);
    metrics::counter!("iqdb_replica_uploaded_bytes_total").absolute(status.bytes);
    if status.last_commit_ms > 0 {
        metrics::gauge!("iqdb_replica_seconds_since_commit")
            .set(now.saturating_sub(status.last_commit_ms) as f64 / 1e3);
    }
}

/// One status line (JSON with --json).
fn print_status(
    out: &mut dyn Write,
    json: bool,
    status: &iqdb_persist_replicate::ReplicatorStatus,
) -> std::io::Result<()> {
    use iqdb_persist_replicate::Clock as _;
    let now = iqdb_persist_replicate::SystemClock.unix_ms();
    let since_commit =
        (status.last_commit_ms > 0).then(|| now.saturating_sub(status.last_commit_ms) as f64 / 1e3);
    if json {
        let doc = json!({
            "event": "status",
            "time": iqdb_persist_replicate::format_time(now),
            "running": status.running,
            "epoch": status.epoch,
            "end_seq": status.end_seq,
            "rounds": status.rounds,
            "commits": status.commits,
            "errors": status.errors,
            "consecutive_errors": status.consecutive_errors,
            "last_error": status.last_error,
            "secs_since_commit": since_commit,
            "bytes": status.bytes,
        });
        output::write_json_line(out, &doc)?;
    } else {
        writeln!(
            out,
            "  status: replica ends before sequence {}, {} commit(s), {} failed round(s) ({} in a row){}",
            status.end_seq,
            status.commits,
            status.errors,
            status.consecutive_errors,
            status
                .last_error
                .as_ref()
                .filter(|_| status.consecutive_errors > 0)
                .map(|e| format!("; last error: {e}"))
                .unwrap_or_default()
        )?;
    }
    out.flush()
}

fn print_round(
    out: &mut dyn Write,
    report: &SyncReport,
    last_generation: &mut Option<String>,
) -> std::io::Result<()> {
    if let Some(g) = &report.new_generation {
        writeln!(out, "  new generation {g} (snapshot uploaded)")?;
        *last_generation = Some(g.clone());
    }
    if let Some(g) = &report.continued_generation {
        writeln!(out, "  continuing generation {g}")?;
    }
    if report.frames > 0 {
        writeln!(
            out,
            "  shipped {} frame(s) in {} segment(s), {}; replica ends before sequence {}",
            report.frames,
            report.segments,
            output::bytes(report.bytes),
            report.end_seq
        )?;
    }
    if report.merged_segments > 0 {
        writeln!(
            out,
            "  merged {} old segment(s) into larger ones",
            report.merged_segments
        )?;
    }
    if report.pruned_generations > 0 || report.deleted_objects > 0 {
        writeln!(
            out,
            "  retention: {} generation(s) pruned, {} object(s) deleted",
            report.pruned_generations, report.deleted_objects
        )?;
    }
    out.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_urls_are_percent_decoded() {
        let ok = |u: &str| normalize_url(u).map_err(|e| e.message);
        assert_eq!(ok("file:///tmp/a%20b"), Ok("file:///tmp/a b".to_string()));
        assert_eq!(
            ok("file:///tmp/plain/"),
            Ok("file:///tmp/plain/".to_string())
        );
        assert_eq!(
            ok("file://localhost/tmp/x"),
            Ok("file:///tmp/x".to_string())
        );
        assert_eq!(ok("s3://b/p%20q"), Ok("s3://b/p%20q".to_string()));
        for bad in ["file://host/tmp/x", "file:///tmp/x?y=1", "file:///tmp/x#f"] {
            let status = normalize_url(bad).err().map(|e| e.status);
            assert_eq!(status, Some(Status::Usage), "{bad}");
        }
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("1s"), Ok(Duration::from_secs(1)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert_eq!(parse_duration("1.5m"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("3"), Ok(Duration::from_secs(3)));
        assert_eq!(parse_duration("10s"), Ok(Duration::from_secs(10)));
        assert_eq!(parse_duration("5min"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("1h 30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("2days"), Ok(Duration::from_secs(2 * 86400)));
        assert_eq!(parse_duration("0.5s"), Ok(Duration::from_millis(500)));
        assert!(parse_duration("soon").is_err());
        assert!(parse_duration("").is_err());
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5x").is_err());
    }
}
