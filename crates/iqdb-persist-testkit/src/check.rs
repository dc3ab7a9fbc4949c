//! Payload-level checks for any [`Persistable`] implementation.
//!
//! `iqdb-persist` frames, checksums and compresses whatever an index's
//! `save_to` writes, and hands `load_from` exactly those bytes back, so most
//! damage on disk is caught before the index sees it. What is left to the
//! index is to round-trip its own state faithfully and to fail cleanly, not
//! panic, on bytes it did not write: a payload from a crashed older writer,
//! a file from another program, a bug elsewhere. These checks exercise
//! exactly that, and they need nothing but the index value:
//!
//! * [`check_round_trip`]: save, load, compare with your equality; then
//!   save the loaded index and load it again.
//! * [`check_truncations`]: every strict prefix of the payload (a sample
//!   for big payloads) must make `load_from` return `Err`.
//! * [`check_bit_flips`]: the payload with one bit flipped (every bit for
//!   small payloads, a sample for big ones) must not make `load_from` panic;
//!   it may return `Ok` or `Err`.
//! * [`check_all`]: all three.
//!
//! A panic in `save_to` or `load_from` is caught with
//! [`std::panic::catch_unwind`] and reported as a [`CheckFailure`] naming
//! the case; the default panic hook still prints the panic message once.
//! (An allocation failure aborts the process instead of panicking, so a
//! `load_from` that sizes buffers from untrusted counts can take the test
//! process down; that is a failure too, just a louder one.)
//!
//! Each case decodes up to a whole payload, so the cost is roughly the
//! number of cases times the payload size: keep the index small (hundreds of
//! records), which is also where exhaustive checking kicks in.
//!
//! ```
//! use iqdb_persist_testkit::{check, generate};
//! use iqdb_types::DistanceMetric;
//!
//! let store = generate::store(1, 20, 4, DistanceMetric::Cosine);
//! let reports = check::check_all(&store, |a, b| a == b).unwrap();
//! assert_eq!(reports.len(), 3);
//! ```

use std::any::Any;
use std::collections::BTreeSet;
use std::fmt;
use std::panic::{AssertUnwindSafe, catch_unwind};

use iqdb_persist::Persistable;

use crate::generate::SplitMix64;

/// Payloads up to this many bytes get every truncation checked.
pub const EXHAUSTIVE_TRUNCATION_LIMIT: usize = 4096;

/// Payloads up to this many bytes get every bit flipped.
pub const EXHAUSTIVE_BIT_FLIP_LIMIT: usize = 1024;

/// Cut points checked on a payload larger than
/// [`EXHAUSTIVE_TRUNCATION_LIMIT`]: the first 128 and the last 64 prefix
/// lengths plus this many spread evenly in between.
pub const SPREAD_TRUNCATIONS: usize = 64;

/// Bit flips checked on a payload larger than
/// [`EXHAUSTIVE_BIT_FLIP_LIMIT`]: every bit of the first 32 bytes (where
/// headers and counts live) plus this many at deterministic pseudo-random
/// positions.
pub const SAMPLED_BIT_FLIPS: usize = 256;

/// What a passing check did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckReport {
    /// The check's name: `"round_trip"`, `"truncations"` or `"bit_flips"`.
    pub check: &'static str,
    /// Length of the payload `save_to` wrote.
    pub payload_len: usize,
    /// Inputs handed to `load_from`.
    pub cases: usize,
    /// Cases where `load_from` returned `Ok`.
    pub loaded: usize,
    /// Cases where `load_from` returned `Err`.
    pub rejected: usize,
}

impl fmt::Display for CheckReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} case(s) on a {}-byte payload: {} loaded, {} rejected",
            self.check, self.cases, self.payload_len, self.loaded, self.rejected
        )
    }
}

/// Why a check failed: the check's name and a message naming the case (the
/// cut point or the flipped bit) and what happened.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckFailure {
    /// The check's name, as in [`CheckReport::check`].
    pub check: &'static str,
    /// What went wrong, and on which input.
    pub message: String,
}

impl fmt::Display for CheckFailure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} check failed: {}", self.check, self.message)
    }
}

impl std::error::Error for CheckFailure {}

fn failure(check: &'static str, message: String) -> CheckFailure {
    CheckFailure { check, message }
}

fn panic_message(payload: &(dyn Any + Send)) -> String {
    if let Some(s) = payload.downcast_ref::<&str>() {
        (*s).to_string()
    } else if let Some(s) = payload.downcast_ref::<String>() {
        s.clone()
    } else {
        "(non-string panic payload)".to_string()
    }
}

/// Runs `save_to` into a `Vec`, turning an error or panic into a failure.
fn save<I: Persistable>(index: &I, check: &'static str) -> Result<Vec<u8>, CheckFailure> {
    let mut payload = Vec::new();
    match catch_unwind(AssertUnwindSafe(|| index.save_to(&mut payload))) {
        Ok(Ok(())) => Ok(payload),
        Ok(Err(e)) => Err(failure(check, format!("save_to returned an error: {e}"))),
        Err(panic) => Err(failure(
            check,
            format!("save_to panicked: {}", panic_message(panic.as_ref())),
        )),
    }
}

/// Runs `load_from` over `bytes`: `Ok(result)` unless it panicked, in which
/// case the panic message.
fn load<I: Persistable>(bytes: &[u8]) -> Result<iqdb_persist::Result<I>, String> {
    catch_unwind(AssertUnwindSafe(|| {
        let mut reader = bytes;
        I::load_from(&mut reader)
    }))
    .map_err(|panic| panic_message(panic.as_ref()))
}

/// Saves `index`, loads the payload back and checks `eq(index, &loaded)`;
/// then saves the loaded index and checks that loading that gives an index
/// equal to the original too.
///
/// `eq` is your notion of "the same index" (for [`VectorStore`] its
/// `PartialEq`; for an approximate index perhaps equal parameters and
/// records). Fails when either save or load returns an error or panics, or
/// when `eq` says no.
///
/// [`VectorStore`]: crate::VectorStore
pub fn check_round_trip<I, F>(index: &I, eq: F) -> Result<CheckReport, CheckFailure>
where
    I: Persistable,
    F: Fn(&I, &I) -> bool,
{
    const CHECK: &str = "round_trip";
    let payload = save(index, CHECK)?;
    let loaded = match load::<I>(&payload) {
        Ok(Ok(loaded)) => loaded,
        Ok(Err(e)) => {
            return Err(failure(
                CHECK,
                format!(
                    "load_from rejected the {}-byte payload save_to wrote: {e}",
                    payload.len()
                ),
            ));
        }
        Err(panic) => {
            return Err(failure(
                CHECK,
                format!(
                    "load_from panicked on the {}-byte payload save_to wrote: {panic}",
                    payload.len()
                ),
            ));
        }
    };
    if !eq(index, &loaded) {
        return Err(failure(
            CHECK,
            format!(
                "the index loaded from the {}-byte payload is not equal to the one saved",
                payload.len()
            ),
        ));
    }
    let second = save(&loaded, CHECK)?;
    match load::<I>(&second) {
        Ok(Ok(reloaded)) if eq(index, &reloaded) => {}
        Ok(Ok(_)) => {
            return Err(failure(
                CHECK,
                "saving the loaded index and loading it again gave an index not equal to the original"
                    .to_string(),
            ));
        }
        Ok(Err(e)) => {
            return Err(failure(
                CHECK,
                format!("load_from rejected the payload of the re-saved index: {e}"),
            ));
        }
        Err(panic) => {
            return Err(failure(
                CHECK,
                format!("load_from panicked on the payload of the re-saved index: {panic}"),
            ));
        }
    }
    Ok(CheckReport {
        check: CHECK,
        payload_len: payload.len(),
        cases: 2,
        loaded: 2,
        rejected: 0,
    })
}

/// The prefix lengths [`check_truncations`] tries on a payload of `len`
/// bytes, in increasing order: every length below `len` when `len` is at
/// most [`EXHAUSTIVE_TRUNCATION_LIMIT`], otherwise a deterministic spread
/// (see [`SPREAD_TRUNCATIONS`]).
#[must_use]
pub fn truncation_points(len: usize) -> Vec<usize> {
    if len <= EXHAUSTIVE_TRUNCATION_LIMIT {
        return (0..len).collect();
    }
    let mut cuts: BTreeSet<usize> = (0..128).collect();
    cuts.extend(len - 64..len);
    cuts.extend((1..=SPREAD_TRUNCATIONS).map(|k| k * (len / (SPREAD_TRUNCATIONS + 1))));
    cuts.into_iter().filter(|&cut| cut < len).collect()
}

/// Saves `index` and checks that `load_from` returns `Err` (and does not
/// panic) for every strict prefix of the payload given by
/// [`truncation_points`].
///
/// A prefix that loads means the format is not self-delimiting or the
/// loader stops reading early; either way a torn write could come back as a
/// different index. Stops at the first failing cut.
pub fn check_truncations<I: Persistable>(index: &I) -> Result<CheckReport, CheckFailure> {
    const CHECK: &str = "truncations";
    let payload = save(index, CHECK)?;
    let cuts = truncation_points(payload.len());
    for &cut in &cuts {
        match load::<I>(&payload[..cut]) {
            Ok(Err(_)) => {}
            Ok(Ok(_)) => {
                return Err(failure(
                    CHECK,
                    format!(
                        "load_from returned Ok for the first {cut} of {} payload bytes \
                         (a truncated payload must be an error)",
                        payload.len()
                    ),
                ));
            }
            Err(panic) => {
                return Err(failure(
                    CHECK,
                    format!(
                        "load_from panicked on the first {cut} of {} payload bytes: {panic}",
                        payload.len()
                    ),
                ));
            }
        }
    }
    Ok(CheckReport {
        check: CHECK,
        payload_len: payload.len(),
        cases: cuts.len(),
        loaded: 0,
        rejected: cuts.len(),
    })
}

/// The bit positions (`byte * 8 + bit`) [`check_bit_flips`] flips on a
/// payload of `len` bytes: all of them when `len` is at most
/// [`EXHAUSTIVE_BIT_FLIP_LIMIT`], otherwise every bit of the first 32 bytes
/// plus [`SAMPLED_BIT_FLIPS`] deterministic pseudo-random positions.
#[must_use]
pub fn bit_flip_positions(len: usize) -> Vec<u64> {
    let bits = (len as u64) * 8;
    if len <= EXHAUSTIVE_BIT_FLIP_LIMIT {
        return (0..bits).collect();
    }
    let mut positions: BTreeSet<u64> = (0..32 * 8).collect();
    let mut rng = SplitMix64::new(bits);
    positions.extend((0..SAMPLED_BIT_FLIPS).map(|_| rng.next_u64() % bits));
    positions.into_iter().collect()
}

/// Saves `index` and, for each position from [`bit_flip_positions`], hands
/// `load_from` the payload with that one bit flipped. `load_from` may
/// accept the damaged payload (a flipped vector component is still a valid
/// vector) or reject it, but must not panic. Stops at the first panic.
pub fn check_bit_flips<I: Persistable>(index: &I) -> Result<CheckReport, CheckFailure> {
    const CHECK: &str = "bit_flips";
    let mut payload = save(index, CHECK)?;
    let positions = bit_flip_positions(payload.len());
    let (mut loaded, mut rejected) = (0, 0);
    for &position in &positions {
        let (byte, bit) = ((position / 8) as usize, (position % 8) as u32);
        let mask = 1u8 << bit;
        payload[byte] ^= mask;
        let outcome = load::<I>(&payload);
        payload[byte] ^= mask;
        match outcome {
            Ok(Ok(_)) => loaded += 1,
            Ok(Err(_)) => rejected += 1,
            Err(panic) => {
                return Err(failure(
                    CHECK,
                    format!(
                        "load_from panicked on the {}-byte payload with bit {bit} of byte \
                         {byte} flipped (mask {mask:#04x}): {panic}",
                        payload.len()
                    ),
                ));
            }
        }
    }
    Ok(CheckReport {
        check: CHECK,
        payload_len: payload.len(),
        cases: positions.len(),
        loaded,
        rejected,
    })
}

/// Runs [`check_round_trip`], [`check_truncations`] and
/// [`check_bit_flips`] in that order, stopping at the first failure.
pub fn check_all<I, F>(index: &I, eq: F) -> Result<Vec<CheckReport>, CheckFailure>
where
    I: Persistable,
    F: Fn(&I, &I) -> bool,
{
    Ok(vec![
        check_round_trip(index, eq)?,
        check_truncations(index)?,
        check_bit_flips(index)?,
    ])
}
