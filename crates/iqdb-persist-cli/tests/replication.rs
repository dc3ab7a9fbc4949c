//! `replicate`, `restore` and `generations` end to end, against a local
//! directory (`file://`, always) and the moto S3 server (skipped with a
//! loud message when it cannot be started, except under CI), and the
//! kill -9 loop: the replicating process is SIGKILLed at random moments
//! (mid-upload, mid-manifest) while the database keeps taking writes; a
//! restore into a fresh directory must always load and hold exactly a
//! prefix of the acknowledged writes, including everything the last
//! complete manifest lists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "../../iqdb-persist-replicate/tests/common/mod.rs"]
mod rcommon;

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use iqdb_persist_replicate::{Replica, StoreOptions};
use iqdb_persist_testkit::generate::SplitMix64;
use rcommon::{TestDb, check_restored, new_bucket, s3_endpoint};

fn cli() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_iqdb-persist"));
    c.env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("AWS_REGION", "us-east-1")
        .env_remove("AWS_ENDPOINT_URL");
    c
}

/// Runs the tool; returns (exit code, stdout, stderr).
fn run(cmd: &mut Command) -> (i32, String, String) {
    let out = cmd.output().unwrap();
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn json(text: &str) -> serde_json::Value {
    serde_json::from_str(text).unwrap_or_else(|e| panic!("not JSON ({e}): {text}"))
}

/// The replica's URL and the flags the tool needs for it.
struct Target {
    url: String,
    flags: Vec<String>,
    options: StoreOptions,
    _dir: Option<tempfile::TempDir>,
}

fn file_target() -> Target {
    let dir = tempfile::tempdir().unwrap();
    Target {
        url: format!("file://{}", dir.path().join("replica").display()),
        flags: Vec::new(),
        options: StoreOptions::default(),
        _dir: Some(dir),
    }
}

fn s3_target(test: &str) -> Option<Target> {
    let endpoint = s3_endpoint()?;
    let bucket = new_bucket(&endpoint, test);
    Some(Target {
        url: format!("s3://{bucket}/replicas/db"),
        flags: vec!["--endpoint".into(), endpoint.clone(), "--allow-http".into()],
        options: rcommon::s3_options(&endpoint),
        _dir: None,
    })
}

impl Target {
    fn cmd(&self, args: &[&str]) -> Command {
        let mut c = cli();
        c.args(args).args(&self.flags);
        c
    }

    fn replica(&self) -> Replica {
        Replica::open(&self.url, &self.options).unwrap()
    }
}

fn end_to_end(target: &Target) {
    let mut db = TestDb::new();
    db.insert(6);
    let path = db.path.to_str().unwrap().to_string();
    let (code, out, err) =
        run(&mut target.cmd(&["replicate", &path, "--to", &target.url, "--once", "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["schema_version"], 1, "{v}");
    assert_eq!(v["end_seq"], 7);
    assert_eq!(v["generations_started"], 1);
    assert_eq!(v["stopped_by"], "once");

    db.checkpoint();
    db.batch(4);
    let (code, out, err) =
        run(&mut target.cmd(&["replicate", &path, "--to", &target.url, "--once"]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("new generation"), "{out}");
    assert!(out.contains("Lease released"), "{out}");

    let (code, out, err) = run(&mut target.cmd(&["generations", &target.url, "--json"]));
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    let gens = v["generations"].as_array().unwrap();
    assert_eq!(gens.len(), 2);
    assert_eq!(gens[1]["base_seq"], 7);
    assert_eq!(gens[1]["end_seq"], 11);
    assert_eq!(v["lease"]["active"], false);
    assert_eq!(v["database"], "db.iqdb");
    assert_eq!(v["unlisted_objects"].as_array().map(Vec::len), Some(0));
    let (code, out, _) = run(&mut target.cmd(&["generations", &target.url]));
    assert_eq!(code, 0);
    assert!(out.contains("2 generation(s)"), "{out}");

    let dir = tempfile::tempdir().unwrap();
    let to = dir.path().join("latest");
    let (code, out, err) = run(&mut target.cmd(&[
        "restore",
        &target.url,
        "--to",
        to.to_str().unwrap(),
        "--json",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    let v = json(&out);
    assert_eq!(v["end_seq"], 11);
    assert_eq!(v["loads"], true);
    assert_eq!(v["vectors"], rcommon::BASE + 10);
    check_restored(&to.join("db.iqdb"), 11);

    let to = dir.path().join("at-seq");
    let (code, out, err) = run(&mut target.cmd(&[
        "restore",
        &target.url,
        "--to",
        to.to_str().unwrap(),
        "--at",
        "3",
        "--name",
        "x.iqdb",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert!(out.contains("loads                yes"), "{out}");
    check_restored(&to.join("x.iqdb"), 4);

    let first_shipped = gens[0]["last_shipped_at"].as_str().unwrap().to_string();
    let to = dir.path().join("at-time");
    let (code, out, err) = run(&mut target.cmd(&[
        "restore",
        &target.url,
        "--to",
        to.to_str().unwrap(),
        "--at",
        &first_shipped,
    ]));
    assert_eq!(code, 0, "{out}{err}");
    check_restored(&to.join("db.iqdb"), 7);

    // Refusals, with the tool's exit codes and one-line errors.
    let (code, _, err) =
        run(&mut target.cmd(&["restore", &target.url, "--to", dir.path().to_str().unwrap()]));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("not empty"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
    let (code, _, err) =
        run(&mut target.cmd(&["restore", &target.url, "--to", "/tmp/never", "--at", "soon"]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(&mut target.cmd(&[
        "restore",
        &target.url,
        "--to",
        dir.path().join("none").to_str().unwrap(),
        "--at",
        "999",
    ]));
    assert_eq!(
        code, 8,
        "no point holds sequence 999: nothing restored: {err}"
    );
    assert!(err.contains("nothing restored"), "{err}");
}

#[test]
fn file_replicate_once_generations_and_restore() {
    end_to_end(&file_target());
}

#[test]
fn s3_replicate_once_generations_and_restore() {
    let Some(target) = s3_target("cli-e2e") else {
        return;
    };
    end_to_end(&target);
}

#[test]
fn usage_errors() {
    let (code, _, err) = run(cli().args(["replicate", "x.iqdb", "--to", "ftp://nope"]));
    assert_eq!(code, 2, "{err}");
    assert!(err.contains("not a replica URL"), "{err}");
    let (code, _, err) = run(cli().args([
        "replicate",
        "x.iqdb",
        "--to",
        "file:///tmp/x",
        "--interval",
        "soon",
    ]));
    assert_eq!(code, 2, "{err}");
    let (code, _, err) = run(cli().args(["generations", "file:///nonexistent-replica-dir-xyz"]));
    assert_eq!(code, 3, "{err}");
    let target = file_target();
    let (code, _, err) = run(&mut target.cmd(&[
        "replicate",
        "/nonexistent/db.iqdb",
        "--to",
        &target.url,
        "--once",
    ]));
    assert_eq!(code, 5, "{err}");
    assert!(err.contains("WAL-mode"), "{err}");
}

/// A running `replicate` holds the lease: a second one exits with 4; Ctrl-C
/// (SIGINT) stops the first cleanly and releases the lease.
fn lease_held_then_sigint(target: &Target) {
    let mut db = TestDb::new();
    let path = db.path.to_str().unwrap().to_string();
    let mut first = target
        .cmd(&[
            "replicate",
            &path,
            "--to",
            &target.url,
            "--interval",
            "50ms",
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let replica = target.replica();
    wait_for(|| {
        replica
            .manifest()
            .ok()
            .flatten()
            .is_some_and(|m| !m.generations.is_empty())
    });
    db.insert(3);
    wait_for(|| {
        replica
            .manifest()
            .ok()
            .flatten()
            .is_some_and(|m| m.generations[0].end_seq() == 4)
    });
    let (code, _, err) = run(&mut target.cmd(&["replicate", &path, "--to", &target.url, "--once"]));
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("locked by another replicator"), "{err}");
    signal(&first, "INT");
    let out = first.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(v["stopped_by"], "signal");
    assert!(replica.lease().unwrap().unwrap().released);
    let (code, _, err) = run(&mut target.cmd(&["replicate", &path, "--to", &target.url, "--once"]));
    assert_eq!(code, 0, "{err}");
    first = target
        .cmd(&["replicate", &path, "--to", &target.url, "--for", "200ms"])
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    assert_eq!(first.wait().unwrap().code(), Some(0));
}

#[test]
fn file_lease_held_then_sigint() {
    lease_held_then_sigint(&file_target());
}

#[test]
fn s3_lease_held_then_sigint() {
    let Some(target) = s3_target("cli-lease") else {
        return;
    };
    lease_held_then_sigint(&target);
}

fn wait_for(mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while !done() {
        assert!(Instant::now() < deadline, "timed out");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn signal(child: &Child, name: &str) {
    let status = Command::new("kill")
        .args([&format!("-{name}"), &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
}

/// The kill -9 loop.
fn kill9_loop(target: &Target, iterations: u64, seed: u64) {
    let db = TestDb::new();
    let path = db.path.to_str().unwrap().to_string();
    let acked = Arc::new(AtomicU64::new(db.next_seq()));
    let stop = Arc::new(AtomicBool::new(false));
    // The application: inserts under FsyncPolicy::Always, checkpoints now
    // and then; `acked` is the sequence number after the last write whose
    // call returned.
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let mut db = db;
        std::thread::spawn(move || {
            let mut n = 0u64;
            while !stop.load(Ordering::SeqCst) {
                if n % 7 == 6 {
                    db.batch(5);
                } else {
                    db.insert(1);
                }
                acked.store(db.next_seq(), Ordering::SeqCst);
                n += 1;
                if n.is_multiple_of(300) {
                    db.checkpoint();
                }
                if n.is_multiple_of(50) {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
            db
        })
    };
    let mut rng = SplitMix64::new(seed);
    let replica = target.replica();
    let mut last_end = 0u64;
    let (mut mid_snapshot, mut restored_points) = (0u64, 0u64);
    let (mut killed_with_snapshot, mut killed_with_segment) = (0u64, 0u64);
    for iteration in 0..iterations {
        let context = format!("iteration {iteration} (seed {seed})");
        let interval = 10 + rng.next_u64() % 60;
        let mut child = target
            .cmd(&[
                "replicate",
                &path,
                "--to",
                &target.url,
                "--interval",
                &format!("{interval}ms"),
                "--quiet",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let wait = 20 + rng.next_u64() % 700;
        std::thread::sleep(Duration::from_millis(wait));
        if let Ok(Some(status)) = child.try_wait() {
            let out = child.wait_with_output().unwrap();
            panic!(
                "{context}: the replicator exited by itself ({status}): {}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let manifest = replica
            .manifest()
            .unwrap_or_else(|e| panic!("{context}: manifest: {e}"));
        // Killed before the first generation was committed (a new
        // replicator commits a manifest without generations to fence older
        // writers before it uploads the snapshot): nothing to restore yet.
        let Some(manifest) = manifest.filter(|m| !m.generations.is_empty()) else {
            mid_snapshot += 1;
            continue;
        };
        // Uploads the kill interrupted (or that landed after it, uncommitted).
        let unlisted = replica.unlisted_objects().unwrap();
        if unlisted.iter().any(|k| k.ends_with("snapshot.iqdb")) {
            killed_with_snapshot += 1;
        }
        if unlisted.iter().any(|k| k.ends_with(".seg")) {
            killed_with_segment += 1;
        }
        let latest = manifest
            .generations
            .last()
            .map_or(0, iqdb_persist_replicate::Generation::end_seq);
        assert!(
            latest >= last_end,
            "{context}: the replica went back from {last_end} to {latest}"
        );
        let out = tempfile::tempdir().unwrap();
        let report = replica
            .restore(&out.path().join("r"), &Default::default())
            .unwrap_or_else(|e| panic!("{context}: restore failed: {e}"));
        assert_eq!(report.fell_back, None, "{context}");
        // A request the killed process had sent may still land after the
        // kill (the server completes it): the manifest can move on between
        // the two reads, never back.
        let after = replica.manifest().unwrap().unwrap();
        let latest_after = after
            .generations
            .last()
            .map_or(0, iqdb_persist_replicate::Generation::end_seq);
        assert!(
            latest <= report.end_seq && report.end_seq <= latest_after,
            "{context}: restored up to {}, the manifest said {latest} before and {latest_after} after",
            report.end_seq
        );
        // Everything shipped was in the log before the restore began: it
        // was acknowledged by now, or is the one step still in flight (the
        // writer logs a step before its call returns; at most 5 operations).
        let acked_now = acked.load(Ordering::SeqCst);
        assert!(
            report.end_seq <= acked_now + 5,
            "{context}: restored {} > acknowledged {acked_now} plus one step in flight",
            report.end_seq
        );
        check_restored(&report.path, report.end_seq);
        last_end = latest_after;
        restored_points += 1;
    }
    stop.store(true, Ordering::SeqCst);
    let db = writer.join().unwrap();
    // A last clean run ships everything (and, with no grace period,
    // removes every leftover at once).
    let (code, _, err) = run(&mut target.cmd(&[
        "replicate",
        &path,
        "--to",
        &target.url,
        "--once",
        "--delete-grace",
        "0s",
    ]));
    assert_eq!(code, 0, "{err}");
    let out = tempfile::tempdir().unwrap();
    let report = replica
        .restore(&out.path().join("r"), &Default::default())
        .unwrap();
    assert_eq!(report.end_seq, db.next_seq());
    check_restored(&report.path, report.end_seq);
    eprintln!(
        "kill -9 loop: {iterations} kills, {restored_points} restores checked, {mid_snapshot} before the first manifest, \
         {killed_with_snapshot} left an uncommitted snapshot, {killed_with_segment} an uncommitted segment; {} operations replicated",
        report.end_seq - 1
    );
    // The clean run removed the leftovers of every killed writer.
    assert_eq!(replica.unlisted_objects().unwrap(), Vec::<String>::new());
}

fn iterations(default: u64) -> u64 {
    std::env::var("IQDB_REPLICATE_KILL_ITERATIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
fn file_kill_9_replicator_restores_a_prefix() {
    kill9_loop(&file_target(), iterations(10), 0xF11E);
}

#[test]
fn s3_kill_9_replicator_restores_a_prefix() {
    let Some(target) = s3_target("cli-kill9") else {
        return;
    };
    kill9_loop(&target, iterations(30), 0x53);
}

/// `replicate` logs to stderr, honouring RUST_LOG.
#[test]
fn replicate_logs_to_stderr_honouring_rust_log() {
    let target = file_target();
    let mut db = TestDb::new();
    db.insert(2);
    let path = db.path.to_str().unwrap().to_string();
    let (code, _, err) = run(target
        .cmd(&["replicate", &path, "--to", &target.url, "--once"])
        .env("RUST_LOG", "iqdb_persist_replicate=info"));
    assert_eq!(code, 0, "{err}");
    assert!(
        err.contains("INFO") && err.contains("lease"),
        "no log output: {err}"
    );
    // The default level (warn) stays quiet when all is well.
    let (code, _, err) = run(target
        .cmd(&["replicate", &path, "--to", &target.url, "--once"])
        .env_remove("RUST_LOG"));
    assert_eq!(code, 0, "{err}");
    assert!(!err.contains("INFO"), "{err}");
}

/// A replicator taken over by another exits with 6 (fenced), not 4
/// (locked), and says so.
#[test]
fn a_fenced_replicator_exits_with_its_own_code() {
    use iqdb_persist_replicate::{ManualClock, Replicator, ReplicatorConfig};
    let target = file_target();
    let mut db = TestDb::new();
    let path = db.path.to_str().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let err_file = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let mut child = target
        .cmd(&[
            "replicate",
            &path,
            "--to",
            &target.url,
            "--interval",
            "50ms",
        ])
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .unwrap();
    let replica = target.replica();
    db.insert(2);
    wait_for(|| {
        replica
            .manifest()
            .ok()
            .flatten()
            .is_some_and(|m| m.generations.first().is_some_and(|g| g.end_seq() == 3))
    });
    // Another replicator whose clock says the lease ran out takes over.
    let clock = Arc::new(ManualClock::new());
    clock.advance(Duration::from_secs(120));
    let mut config = ReplicatorConfig::new(&db.path);
    config.clock = clock;
    let mut other = Replicator::new(target.replica(), config).unwrap();
    db.insert(1);
    other.sync().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("the fenced replicator did not stop");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert_eq!(status.code(), Some(6), "{err}");
    assert!(
        err.contains("fenced") || err.contains("took the lease over"),
        "{err}"
    );
    other.release().unwrap();
}

/// `generations` against a server that accepts connections and never
/// answers (a frozen store) fails with an I/O error instead of hanging.
#[test]
fn generations_fails_fast_when_the_store_does_not_answer() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let accepted = Arc::new(AtomicU64::new(0));
    {
        let accepted = accepted.clone();
        std::thread::spawn(move || {
            let mut held = Vec::new();
            for conn in listener.incoming() {
                accepted.fetch_add(1, Ordering::SeqCst);
                held.push(conn);
            }
        });
    }
    let dir = tempfile::tempdir().unwrap();
    let err_file = std::fs::File::create(dir.path().join("stderr")).unwrap();
    let mut child = cli()
        .args([
            "generations",
            "s3://frozen/db",
            "--endpoint",
            &format!("http://127.0.0.1:{port}"),
            "--allow-http",
        ])
        .stdout(Stdio::null())
        .stderr(err_file)
        .spawn()
        .unwrap();
    // Not a speed assertion: a bound on hanging (the default request
    // timeout alone is 30 s, retries included).
    let deadline = Instant::now() + Duration::from_secs(25);
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            child.kill().unwrap();
            panic!("generations hung on a store that does not answer");
        }
        std::thread::sleep(Duration::from_millis(50));
    };
    assert!(
        accepted.load(Ordering::SeqCst) >= 1,
        "the request reached the server"
    );
    let err = std::fs::read_to_string(dir.path().join("stderr")).unwrap();
    assert_eq!(status.code(), Some(3), "{err}");
    assert!(err.contains("error"), "{err}");
}

/// A private moto server (its own state directory), so that freezing it
/// disturbs no other test.
struct PrivateMoto {
    state: tempfile::TempDir,
    endpoint: String,
    pid: i32,
}

impl PrivateMoto {
    fn start() -> Option<Self> {
        // The shared server proves moto can run here (it installs it).
        s3_endpoint()?;
        let state = tempfile::tempdir().unwrap();
        let script = rcommon::workspace().join("scripts/s3-server.sh");
        let ok = Command::new("bash")
            .arg(&script)
            .arg("start")
            .env("IQDB_MOTO_STATE", state.path())
            .stdout(Stdio::null())
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "could not start a private moto server");
        let endpoint = std::fs::read_to_string(state.path().join("endpoint"))
            .unwrap()
            .trim()
            .to_string();
        let pid = std::fs::read_to_string(state.path().join("pid"))
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        Some(Self {
            state,
            endpoint,
            pid,
        })
    }

    fn signal(&self, name: &str) {
        let ok = Command::new("kill")
            .args([&format!("-{name}"), &self.pid.to_string()])
            .status()
            .unwrap()
            .success();
        assert!(ok, "kill -{name} {}", self.pid);
    }
}

impl Drop for PrivateMoto {
    fn drop(&mut self) {
        let _ = Command::new("kill")
            .args(["-CONT", &self.pid.to_string()])
            .status();
        let _ = Command::new("bash")
            .arg(rcommon::workspace().join("scripts/s3-server.sh"))
            .arg("stop")
            .env("IQDB_MOTO_STATE", self.state.path())
            .status();
    }
}

/// The operator's scenario of issue 10: a writer at about 100 durable
/// inserts/s, `replicate` to S3, the S3 server frozen (SIGSTOP) for 60 s —
/// twice the lease's time to live — and resumed. The replicator keeps
/// running, logs its retries, reports them in its status lines, and
/// catches up by itself.
#[test]
fn s3_replicate_rides_out_a_60_second_freeze() {
    let Some(moto) = PrivateMoto::start() else {
        return;
    };
    let bucket = new_bucket(&moto.endpoint, "freeze");
    let url = format!("s3://{bucket}/db");
    let db = TestDb::new();
    let path = db.path.to_str().unwrap().to_string();
    let acked = Arc::new(AtomicU64::new(db.next_seq()));
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let (acked, stop) = (acked.clone(), stop.clone());
        let mut db = db;
        std::thread::spawn(move || {
            while !stop.load(Ordering::SeqCst) {
                db.insert(1);
                acked.store(db.next_seq(), Ordering::SeqCst);
                std::thread::sleep(Duration::from_millis(10));
            }
            db
        })
    };
    let logs = tempfile::tempdir().unwrap();
    let mut child = cli()
        .args([
            "--json",
            "replicate",
            &path,
            "--to",
            &url,
            "--endpoint",
            &moto.endpoint,
            "--allow-http",
            "--interval",
            "200ms",
            "--status-every",
            "1s",
        ])
        .env("RUST_LOG", "warn")
        .stdout(std::fs::File::create(logs.path().join("stdout")).unwrap())
        .stderr(std::fs::File::create(logs.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let replica = Replica::open(&url, &rcommon::s3_options(&moto.endpoint)).unwrap();
    let end = |r: &Replica| {
        r.manifest()
            .ok()
            .flatten()
            .and_then(|m| {
                m.generations
                    .last()
                    .map(iqdb_persist_replicate::Generation::end_seq)
            })
            .unwrap_or(0)
    };
    wait_for(|| end(&replica) > 50);
    let before = end(&replica);
    moto.signal("STOP");
    let frozen_at = Instant::now();
    while frozen_at.elapsed() < Duration::from_secs(60) {
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            child.try_wait().unwrap().is_none(),
            "the replicator exited during the freeze: {}",
            std::fs::read_to_string(logs.path().join("stderr")).unwrap()
        );
    }
    moto.signal("CONT");
    let thawed = Instant::now();
    stop.store(true, Ordering::SeqCst);
    let db = writer.join().unwrap();
    let want = acked.load(Ordering::SeqCst);
    assert!(
        want > before + 1000,
        "the writer kept writing ({before} -> {want})"
    );
    let deadline = Instant::now() + Duration::from_secs(120);
    while end(&replica) < want {
        assert!(
            Instant::now() < deadline,
            "the replica did not catch up ({} of {want})",
            end(&replica)
        );
        assert!(child.try_wait().unwrap().is_none(), "the replicator exited");
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!(
        "60 s freeze: replica at {before} when frozen, {want} operations acknowledged; caught up {:.1} s after the server resumed",
        thawed.elapsed().as_secs_f64()
    );
    assert!(
        child.try_wait().unwrap().is_none(),
        "still running after catching up"
    );
    signal(&child, "TERM");
    let status = child.wait().unwrap();
    let stderr = std::fs::read_to_string(logs.path().join("stderr")).unwrap();
    let stdout = std::fs::read_to_string(logs.path().join("stdout")).unwrap();
    assert_eq!(status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("retrying"),
        "the retries were logged: {stderr}"
    );
    let statuses: Vec<serde_json::Value> = stdout
        .lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["event"] == "status")
        .collect();
    assert!(
        statuses
            .iter()
            .any(|v| v["consecutive_errors"].as_u64() > Some(0)),
        "a status line reported the outage: {stdout}"
    );
    let out = tempfile::tempdir().unwrap();
    let report = replica
        .restore(&out.path().join("r"), &Default::default())
        .unwrap();
    assert_eq!(report.end_seq, db.next_seq());
    check_restored(&report.path, report.end_seq);
}

/// `restore --if-replica-exists` and `--if-db-not-exists`, as a container
/// entrypoint uses them: a no-op when there is nothing to restore or the
/// database is already there.
#[test]
fn restore_if_flags_for_container_entrypoints() {
    let target = file_target();
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("data");
    let to = to.to_str().unwrap();
    let flags = ["--if-db-not-exists", "--if-replica-exists"];
    let restore = |extra: &[&str]| {
        let mut args = vec!["restore", target.url.as_str(), "--to", to];
        args.extend_from_slice(extra);
        run(&mut target.cmd(&args))
    };
    let (code, stdout, err) = restore(&flags);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("Nothing restored: no replica"), "{stdout}");
    let (code, _, err) = restore(&[]);
    assert_eq!(
        code, 8,
        "without the flag an empty replica is 'nothing restored': {err}"
    );

    let mut db = TestDb::new();
    db.insert(3);
    let path = db.path.to_str().unwrap().to_string();
    let (code, _, err) = run(&mut target.cmd(&["replicate", &path, "--to", &target.url, "--once"]));
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err) =
        run(&mut target.cmd(&["generations", &target.url, "--verify", "--json"]));
    assert_eq!(code, 0, "{err}");
    let v = json(&stdout);
    assert_eq!(v["verify"]["objects"], 2, "{v}");
    assert_eq!(
        v["verify"]["problems"].as_array().map(Vec::len),
        Some(0),
        "{v}"
    );
    let (code, stdout, err) = restore(&flags);
    assert_eq!(code, 0, "{err}");
    assert!(stdout.contains("Restored"), "{stdout}");
    check_restored(&std::path::Path::new(to).join("db.iqdb"), 4);
    let (code, stdout, err) = restore(&["--if-db-not-exists", "--json"]);
    assert_eq!(code, 0, "{err}");
    let v = json(&stdout);
    assert_eq!(v["restored"], false);
    assert!(
        v["reason"].as_str().unwrap().contains("already exists"),
        "{v}"
    );
    let (code, _, err) = restore(&[]);
    assert_ne!(
        code, 0,
        "without the flag a non-empty directory is refused: {err}"
    );
}

/// Flips a byte of a replica object of a `file://` target (checked to
/// change the file).
fn damage_file_object(target: &Target, key: &str) {
    let dir = target.url.strip_prefix("file://").unwrap();
    let path = std::path::Path::new(dir).join(key);
    let mut bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let at = bytes.len() / 2;
    bytes[at] ^= 0x55;
    std::fs::write(&path, &bytes).unwrap();
    assert_ne!(
        std::fs::read(&path).unwrap()[at],
        bytes[at] ^ 0x55,
        "the damage landed"
    );
}

/// Each outcome of `restore` has its own exit code: 0 the latest point, 7
/// an earlier point because the latest is damaged, 1 nothing (damaged, no
/// intact earlier point), 8 nothing (an empty replica).
#[test]
fn restore_outcomes_have_distinct_exit_codes() {
    let target = file_target();
    let out = tempfile::tempdir().unwrap();
    let restore = |name: &str, json: bool| {
        let to = out.path().join(name);
        let mut args = vec!["restore", target.url.as_str(), "--to", to.to_str().unwrap()];
        if json {
            args.push("--json");
        }
        let (code, stdout, err) = run(&mut target.cmd(&args));
        (code, stdout, err, to)
    };
    let (code, stdout, err, _) = restore("empty", true);
    assert_eq!(code, 8, "{stdout}{err}");
    assert_eq!(json(&stdout)["exit_code"], 8, "{stdout}");

    let mut db = TestDb::new();
    db.insert(4);
    let path = db.path.to_str().unwrap().to_string();
    let (code, _, err) = run(&mut target.cmd(&["replicate", &path, "--to", &target.url, "--once"]));
    assert_eq!(code, 0, "{err}");
    db.checkpoint();
    db.insert(3);
    let (code, _, err) = run(&mut target.cmd(&["replicate", &path, "--to", &target.url, "--once"]));
    assert_eq!(code, 0, "{err}");
    let (code, stdout, err, to) = restore("latest", false);
    assert_eq!(code, 0, "{stdout}{err}");
    assert!(
        stdout.contains("Status: restored (exit code 0)"),
        "{stdout}"
    );
    check_restored(&to.join("db.iqdb"), 8);

    let manifest = target.replica().manifest().unwrap().unwrap();
    assert_eq!(manifest.generations.len(), 2);
    damage_file_object(&target, &manifest.generations[1].snapshot.key);
    let (code, stdout, err, to) = restore("earlier", true);
    assert_eq!(code, 7, "{stdout}{err}");
    let v = json(&stdout);
    assert_eq!(v["exit_code"], 7, "{v}");
    assert_eq!(v["schema_version"], 1, "{v}");
    assert_eq!(v["restored"], true, "{v}");
    assert!(v["fell_back"].as_str().is_some(), "{v}");
    check_restored(&to.join("db.iqdb"), 5);
    let (code, stdout, _, _) = restore("earlier-text", false);
    assert_eq!(code, 7);
    assert!(
        stdout.contains("restored an earlier point (exit code 7)"),
        "{stdout}"
    );

    damage_file_object(&target, &manifest.generations[0].snapshot.key);
    let (code, stdout, err, to) = restore("none", false);
    assert_eq!(code, 1, "nothing intact: {stdout}{err}");
    assert_eq!(
        std::fs::read_dir(&to).map(|d| d.count()).unwrap_or(0),
        0,
        "nothing left behind"
    );
}

fn http_get(port: u16, path: &str) -> Option<String> {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    Some(response)
}

/// `replicate --metrics-addr` serves Prometheus metrics that follow the
/// replica.
#[test]
fn replicate_serves_prometheus_metrics() {
    let target = file_target();
    let mut db = TestDb::new();
    let path = db.path.to_str().unwrap().to_string();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let addr = format!("127.0.0.1:{port}");
    let mut child = target
        .cmd(&[
            "replicate",
            &path,
            "--to",
            &target.url,
            "--interval",
            "50ms",
            "--metrics-addr",
            &addr,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    db.insert(3);
    let mut last = String::new();
    wait_for(|| {
        last = http_get(port, "/metrics").unwrap_or_default();
        last.contains("iqdb_replica_end_seq 4")
    });
    assert!(last.contains("iqdb_replica_running 1"), "{last}");
    assert!(last.contains("iqdb_replica_commits_total"), "{last}");
    assert!(last.contains("iqdb_replica_consecutive_errors 0"), "{last}");
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0));
}

/// Peak resident memory (VmHWM) of a running process, in bytes.
fn peak_rss(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// A restore holds at most a segment of the log in memory, whatever the
/// log's length: a 160 MiB log (each operation a 4 KiB vector inserted and
/// deleted again, so the index stays small) restores with a peak far below
/// the log's size. (The restore used to hold the whole log.)
#[test]
fn restore_memory_does_not_grow_with_the_log() {
    use iqdb_persist::{FsyncPolicy, PersistConfig, PersistedIndex};
    use iqdb_persist_testkit::generate;
    const DIM: usize = 1024;
    let target = file_target();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("big.iqdb");
    let mut config = PersistConfig::new(&path);
    config.wal_enabled = true;
    config.fsync_policy = FsyncPolicy::Never;
    let mut db = PersistedIndex::open_with(
        generate::store(7, 10, DIM, iqdb_types::DistanceMetric::Cosine),
        config,
    )
    .unwrap();
    let mut i = 10u64;
    for _ in 0..1200 {
        let mut batch = db.batch();
        for _ in 0..32 {
            let (id, v, m) = generate::record(7, i, DIM);
            batch.insert(id.clone(), v, m);
            batch.delete(id);
            i += 1;
        }
        batch.commit().unwrap();
    }
    db.sync().unwrap();
    let log_len = std::fs::metadata(iqdb_persist::PersistConfig::new(&path).wal_path())
        .unwrap()
        .len();
    assert!(log_len > 150 << 20, "log of {log_len} bytes");
    let path_s = path.to_str().unwrap().to_string();
    let (code, _, err) =
        run(&mut target.cmd(&["replicate", &path_s, "--to", &target.url, "--once"]));
    assert_eq!(code, 0, "{err}");
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("r");
    let mut child = target
        .cmd(&[
            "restore",
            &target.url,
            "--to",
            to.to_str().unwrap(),
            "--json",
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0u64;
    while child.try_wait().unwrap().is_none() {
        if let Some(p) = peak_rss(pid) {
            peak = peak.max(p);
        }
        std::thread::sleep(Duration::from_millis(5));
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(0), "{output:?}");
    let v = json(&String::from_utf8_lossy(&output.stdout));
    assert_eq!(
        v["end_seq"].as_u64(),
        Some(db.next_sequence().unwrap()),
        "{v}"
    );
    eprintln!(
        "restore of a {} MiB log: peak RSS {} MiB",
        log_len >> 20,
        peak >> 20
    );
    assert!(peak > 0, "the restore's memory was sampled");
    assert!(
        peak < 96 << 20,
        "peak RSS {} MiB for a {} MiB log",
        peak >> 20,
        log_len >> 20
    );
}

/// A `replicate` started while the store does not answer waits for it and
/// then replicates (a daemon started before its store, as in a container
/// that comes up first).
#[test]
fn s3_replicate_started_during_an_outage_waits_for_the_store() {
    let Some(moto) = PrivateMoto::start() else {
        return;
    };
    let bucket = new_bucket(&moto.endpoint, "late");
    let url = format!("s3://{bucket}/db");
    let mut db = TestDb::new();
    db.insert(4);
    let path = db.path.to_str().unwrap().to_string();
    moto.signal("STOP");
    let logs = tempfile::tempdir().unwrap();
    let mut child = cli()
        .args([
            "replicate",
            &path,
            "--to",
            &url,
            "--endpoint",
            &moto.endpoint,
            "--allow-http",
            "--interval",
            "100ms",
            "--timeout",
            "1s",
            // An attempt whose lease write lands after it timed out holds
            // the lease until it expires.
            "--lease-ttl",
            "5s",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(logs.path().join("stderr")).unwrap())
        .spawn()
        .unwrap();
    let stderr = || std::fs::read_to_string(logs.path().join("stderr")).unwrap();
    wait_for(|| stderr().contains("cannot start replicating yet"));
    assert!(child.try_wait().unwrap().is_none(), "{}", stderr());
    moto.signal("CONT");
    let replica = Replica::open(&url, &rcommon::s3_options(&moto.endpoint)).unwrap();
    wait_for(|| {
        replica.manifest().ok().flatten().and_then(|m| {
            m.generations
                .last()
                .map(iqdb_persist_replicate::Generation::end_seq)
        }) == Some(5)
    });
    signal(&child, "TERM");
    assert_eq!(child.wait().unwrap().code(), Some(0), "{}", stderr());
}

/// The store flags name their environment variables in `--help`, and the
/// variables are read through them (`AWS_ALLOW_HTTP` as a boolish value).
#[test]
fn store_flags_show_and_read_their_environment_variables() {
    for sub in ["replicate", "restore", "generations"] {
        let (code, out, err) = run(cli().args([sub, "--help"]));
        assert_eq!(code, 0, "{err}");
        for var in ["AWS_ENDPOINT_URL", "AWS_REGION", "AWS_ALLOW_HTTP"] {
            assert!(
                out.contains(&format!("[env: {var}")),
                "{sub}: {var}:\n{out}"
            );
        }
    }
    let target = file_target();
    for value in ["1", "true", "0", "no"] {
        let (code, out, err) = run(target
            .cmd(&["generations", &target.url])
            .env("AWS_ALLOW_HTTP", value));
        assert_ne!(code, 2, "AWS_ALLOW_HTTP={value} is accepted: {out}{err}");
    }
    let (code, _, err) = run(target
        .cmd(&["generations", &target.url])
        .env("AWS_ALLOW_HTTP", "maybe"));
    assert_eq!(code, 2, "a bad AWS_ALLOW_HTTP is a usage error: {err}");
    assert!(
        err.contains("AWS_ALLOW_HTTP") || err.contains("maybe"),
        "{err}"
    );
}

/// A `file://` URL is percent-decoded: `a%20b` is the directory `a b`.
/// Durations take humantime's forms (`1h 30m`, `500ms`) and the older
/// decimal ones (`0.5s`).
#[test]
fn file_urls_are_percent_decoded_and_durations_are_humantime() {
    let dir = tempfile::tempdir().unwrap();
    let replica_dir = dir.path().join("a b");
    let url = format!("file://{}/a%20b", dir.path().display());
    let mut db = TestDb::new();
    db.insert(3);
    let path = db.path.to_str().unwrap().to_string();
    let (code, out, err) = run(cli().args([
        "replicate",
        &path,
        "--to",
        &url,
        "--once",
        "--interval",
        "500ms",
        "--lease-ttl",
        "1h 30m",
        "--delete-grace",
        "0.5s",
        "--json",
    ]));
    assert_eq!(code, 0, "{out}{err}");
    assert_eq!(
        json(&out)["url"],
        format!("file://{}", replica_dir.display()),
        "{out}"
    );
    assert!(
        replica_dir.join("manifest").exists(),
        "objects are under {}",
        replica_dir.display()
    );
    assert!(!dir.path().join("a%20b").exists());
    let to = dir.path().join("restored");
    let (code, out, err) = run(cli().args(["restore", &url, "--to", to.to_str().unwrap()]));
    assert_eq!(code, 0, "{out}{err}");
    check_restored(&to.join("db.iqdb"), 4);
    let (code, _, err) = run(cli().args(["replicate", &path, "--to", &url, "--interval", "soon"]));
    assert_eq!(code, 2, "{err}");
}

/// `-q`: `replicate`, `restore` and `generations` print nothing on stdout.
#[test]
fn quiet_replication_commands_print_nothing_on_stdout() {
    let target = file_target();
    let mut db = TestDb::new();
    db.insert(3);
    let path = db.path.to_str().unwrap().to_string();
    let out = tempfile::tempdir().unwrap();
    let to = out.path().join("r");
    let to = to.to_str().unwrap();
    for args in [
        vec!["-q", "replicate", &path, "--to", &target.url, "--once"],
        vec!["-q", "--json", "generations", &target.url],
        vec!["-q", "restore", &target.url, "--to", to],
    ] {
        let (code, stdout, err) = run(&mut target.cmd(&args));
        assert_eq!(code, 0, "{args:?}: {err}");
        assert!(stdout.is_empty(), "{args:?}: {stdout}");
    }
    check_restored(&std::path::Path::new(to).join("db.iqdb"), 4);
    let (code, stdout, err) =
        run(&mut target.cmd(&["-q", "--json", "restore", &target.url, "--to", to]));
    assert_eq!(code, 5, "a non-empty DIR: {err}");
    assert!(stdout.is_empty(), "{stdout}");
    assert_eq!(err.lines().count(), 1, "{err}");
}
