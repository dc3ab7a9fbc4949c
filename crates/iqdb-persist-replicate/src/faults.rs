//! A fault-injecting [`ObjectStore`] wrapper for testing replication
//! against the real world: slow links, server errors, timeouts, lost
//! answers to writes that landed, hangs (a frozen server) and objects of
//! the wrong size.
//!
//! Faults come from two sources, both deterministic:
//!
//! * **scripted** ([`FaultyStore::inject`]): the next call of an operation
//!   on a key containing a string gets a given fault — for tests of one
//!   path;
//! * **random** ([`FaultyStore::with_random`]): each call draws from a
//!   seeded generator with the probabilities of [`RandomFaults`] — for
//!   simulations; a seed replays the same faults for the same sequence of
//!   calls.
//!
//! [`FaultyStore::freeze`] makes every call hang until
//! [`FaultyStore::thaw`] (or, with a timeout, fail like a client whose
//! request timed out). Every fault that fires is counted
//! ([`FaultyStore::fired`]), so a test can first check that it fired.
//!
//! Delays and throttling of every call are better had from `object_store`'s
//! own [`ThrottledStore`](object_store::throttle::ThrottledStore): wrap it
//! in this store (or this store in it).
//!
//! ```
//! use std::sync::Arc;
//! use iqdb_persist_replicate::faults::{Fault, FaultyStore, Op};
//! use object_store::{ObjectStoreExt, memory::InMemory, path::Path};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let store = Arc::new(FaultyStore::new(Arc::new(InMemory::new())));
//! store.inject(Op::Put, "lease", Fault::LostResponse);
//! let rt = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
//! let put = rt.block_on(store.put(&Path::from("p/lease"), vec![1u8].into()));
//! assert!(put.is_err());                               // the answer was "lost"...
//! assert!(rt.block_on(store.head(&Path::from("p/lease"))).is_ok()); // ...but it landed
//! assert_eq!(store.fired(Fault::LostResponse), 1);
//! # Ok(())
//! # }
//! ```

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use futures::stream::BoxStream;
use object_store::path::Path;
use object_store::{
    CopyOptions, GetOptions, GetResult, GetResultPayload, ListResult, MultipartUpload, ObjectMeta,
    ObjectStore, PutMultipartOptions, PutOptions, PutPayload, PutResult,
};

/// An operation of the store, as faults are aimed at them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Op {
    /// `get_opts` (also HEAD and ranged GETs).
    Get,
    /// `put_opts`.
    Put,
    /// Starting a multipart upload.
    Multipart,
    /// Deletes.
    Delete,
    /// Listings.
    List,
    /// Copies.
    Copy,
}

/// What goes wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Fault {
    /// The server answers 503 and does nothing.
    Error,
    /// The call takes this long, then fails like a client timeout, having
    /// done nothing.
    Timeout(Duration),
    /// The write is applied, then the answer is lost (an error is returned).
    LostResponse,
    /// The write is applied, its answer lost, and the client retries it:
    /// the retry's own answer is returned (for a conditional write: the
    /// precondition failure its own first attempt caused).
    AppliedThenRetried,
    /// The call waits this long, then proceeds normally (a slow link).
    Delay(Duration),
    /// A GET returns the object with its last byte cut off (a short body).
    Truncated,
    /// A GET returns the object with extra bytes appended (and its size
    /// reported so).
    Extended,
}

impl Fault {
    /// The fault's kind, for counting (durations set to zero).
    fn kind(self) -> Self {
        match self {
            Self::Timeout(_) => Self::Timeout(Duration::ZERO),
            Self::Delay(_) => Self::Delay(Duration::ZERO),
            other => other,
        }
    }
}

/// Probabilities (0.0 to 1.0) of random faults, per call.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RandomFaults {
    /// A 503 before anything is done.
    pub error: f64,
    /// A timeout of `timeout` before anything is done.
    pub timeout: f64,
    /// How long a timeout takes.
    pub timeout_after: Duration,
    /// A write that lands and whose answer is lost.
    pub lost_response: f64,
    /// A write that lands, is retried, and answers with the retry's result.
    pub applied_then_retried: f64,
    /// A delay of up to `max_delay`.
    pub delay: f64,
    /// The longest delay.
    pub max_delay: Duration,
    /// A GET whose body is one byte short or long.
    pub wrong_size: f64,
}

impl Default for RandomFaults {
    /// Every kind now and then (about one call in eight has a fault).
    fn default() -> Self {
        Self {
            error: 0.03,
            timeout: 0.01,
            timeout_after: Duration::from_millis(20),
            lost_response: 0.03,
            applied_then_retried: 0.02,
            delay: 0.03,
            max_delay: Duration::from_millis(5),
            wrong_size: 0.01,
        }
    }
}

/// SplitMix64: small, fast, and the same everywhere for a seed.
#[derive(Debug, Clone)]
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn chance(&mut self, p: f64) -> bool {
        let x = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        p > 0.0 && x < p
    }
}

#[derive(Debug, Default)]
struct State {
    scripted: Vec<(Op, String, Fault)>,
    random: Option<(Rng, RandomFaults)>,
    fired: HashMap<Fault, u64>,
    calls: u64,
}

/// Something to run before a call (see [`FaultyStore::before_next`]).
type Hook = Box<dyn FnOnce(&Arc<dyn ObjectStore>) + Send>;

/// The fault-injecting wrapper (see the [module docs](self)).
pub struct FaultyStore {
    inner: Arc<dyn ObjectStore>,
    state: Mutex<State>,
    hooks: Mutex<Vec<(Op, String, Hook)>>,
    frozen: AtomicBool,
    /// While frozen, calls fail after this long (else they wait).
    freeze_timeout: Mutex<Option<Duration>>,
    paused: AtomicBool,
    /// Objects the listings yielded so far.
    listed: Arc<AtomicU64>,
}

impl fmt::Debug for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("FaultyStore")
            .field("inner", &self.inner.to_string())
            .field("frozen", &self.frozen.load(Ordering::SeqCst))
            .finish_non_exhaustive()
    }
}

impl fmt::Display for FaultyStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "FaultyStore({})", self.inner)
    }
}

fn injected(what: &str) -> object_store::Error {
    object_store::Error::Generic {
        store: "FaultyStore",
        source: what.to_string().into(),
    }
}

impl FaultyStore {
    /// A wrapper around `inner` that injects only scripted faults.
    #[must_use]
    pub fn new(inner: Arc<dyn ObjectStore>) -> Self {
        Self {
            inner,
            state: Mutex::new(State::default()),
            hooks: Mutex::new(Vec::new()),
            frozen: AtomicBool::new(false),
            freeze_timeout: Mutex::new(None),
            paused: AtomicBool::new(false),
            listed: Arc::default(),
        }
    }

    /// A wrapper that also injects random faults, drawn from `seed`.
    #[must_use]
    pub fn with_random(inner: Arc<dyn ObjectStore>, seed: u64, faults: RandomFaults) -> Self {
        let this = Self::new(inner);
        this.lock().random = Some((Rng(seed), faults));
        this
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The next call of `op` on a path containing `key_contains` gets
    /// `fault` (scripted faults fire in the order they were injected).
    pub fn inject(&self, op: Op, key_contains: &str, fault: Fault) {
        self.lock()
            .scripted
            .push((op, key_contains.to_string(), fault));
    }

    /// Before the next call of `op` on a path containing `key_contains`,
    /// runs `hook` with the store underneath — to make something happen
    /// at an exact point of another party's work (another writer's commit
    /// landing between a read and a write, an object deleted while a
    /// restore runs). The hook runs inside the async call: it must not
    /// block on a tokio runtime (`futures::executor::block_on` on an
    /// in-memory store is fine).
    pub fn before_next(
        &self,
        op: Op,
        key_contains: &str,
        hook: impl FnOnce(&Arc<dyn ObjectStore>) + Send + 'static,
    ) {
        self.hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .push((op, key_contains.to_string(), Box::new(hook)));
    }

    /// Hooks not yet run.
    #[must_use]
    pub fn pending_hooks(&self) -> usize {
        self.hooks
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .len()
    }

    fn run_hook(&self, op: Op, path: &Path) {
        let hook = {
            let mut hooks = self
                .hooks
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            hooks
                .iter()
                .position(|(o, k, _)| *o == op && path.as_ref().contains(k.as_str()))
                .map(|i| hooks.remove(i).2)
        };
        if let Some(hook) = hook {
            hook(&self.inner);
        }
    }

    /// Scripted faults not yet fired.
    #[must_use]
    pub fn pending(&self) -> usize {
        self.lock().scripted.len()
    }

    /// Stops (or resumes, with `false`) random faults; scripted ones still
    /// fire.
    pub fn pause_random(&self, paused: bool) {
        self.paused.store(paused, Ordering::SeqCst);
    }

    /// Every call from now on hangs until [`thaw`](Self::thaw) — or, with
    /// `timeout`, fails after that long, as a client's timeout would.
    pub fn freeze(&self, timeout: Option<Duration>) {
        *self
            .freeze_timeout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = timeout;
        self.frozen.store(true, Ordering::SeqCst);
    }

    /// Ends a [`freeze`](Self::freeze).
    pub fn thaw(&self) {
        self.frozen.store(false, Ordering::SeqCst);
    }

    /// How often a fault of this kind fired (durations are ignored).
    #[must_use]
    pub fn fired(&self, fault: Fault) -> u64 {
        self.lock().fired.get(&fault.kind()).copied().unwrap_or(0)
    }

    /// How many faults of any kind fired.
    #[must_use]
    pub fn fired_total(&self) -> u64 {
        self.lock().fired.values().sum()
    }

    /// Calls made.
    #[must_use]
    pub fn calls(&self) -> u64 {
        self.lock().calls
    }

    /// How many objects the listings (`list`) have yielded so far, counted
    /// as the caller consumes them — shared, so a hook can read it at an
    /// exact point (showing a listing is processed page by page).
    #[must_use]
    pub fn listed(&self) -> Arc<AtomicU64> {
        self.listed.clone()
    }

    /// The store underneath.
    #[must_use]
    pub fn inner(&self) -> &Arc<dyn ObjectStore> {
        &self.inner
    }

    /// Draws the fault for one call.
    fn draw(&self, op: Op, path: &Path) -> Option<Fault> {
        let mut state = self.lock();
        state.calls += 1;
        let key = path.as_ref();
        let fault = if let Some(i) = state
            .scripted
            .iter()
            .position(|(o, k, _)| *o == op && key.contains(k.as_str()))
        {
            Some(state.scripted.remove(i).2)
        } else if self.paused.load(Ordering::SeqCst) {
            None
        } else if let Some((rng, p)) = state.random.as_mut() {
            let p = *p;
            let write = matches!(op, Op::Put);
            if rng.chance(p.error) {
                Some(Fault::Error)
            } else if rng.chance(p.timeout) {
                Some(Fault::Timeout(p.timeout_after))
            } else if write && rng.chance(p.lost_response) {
                Some(Fault::LostResponse)
            } else if write && rng.chance(p.applied_then_retried) {
                Some(Fault::AppliedThenRetried)
            } else if op == Op::Get && rng.chance(p.wrong_size) {
                Some(if rng.next() % 2 == 0 {
                    Fault::Truncated
                } else {
                    Fault::Extended
                })
            } else if rng.chance(p.delay) {
                let max = u64::try_from(p.max_delay.as_micros())
                    .unwrap_or(u64::MAX)
                    .max(1);
                Some(Fault::Delay(Duration::from_micros(rng.next() % max)))
            } else {
                None
            }
        } else {
            None
        };
        // Faults that do not apply to the operation do not fire.
        let fault = fault.filter(|f| match f {
            Fault::LostResponse | Fault::AppliedThenRetried => op == Op::Put,
            Fault::Truncated | Fault::Extended => op == Op::Get,
            _ => true,
        });
        if let Some(f) = fault {
            *state.fired.entry(f.kind()).or_insert(0) += 1;
        }
        fault
    }

    /// Waits out a freeze (or fails after its timeout).
    async fn frozen(&self) -> object_store::Result<()> {
        let timeout = *self
            .freeze_timeout
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut waited = Duration::ZERO;
        while self.frozen.load(Ordering::SeqCst) {
            if timeout.is_some_and(|t| waited >= t) {
                return Err(injected("injected: the store did not answer (frozen)"));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
            waited += Duration::from_millis(5);
        }
        Ok(())
    }

    /// The common part: freeze, then the drawn fault's "before" effect.
    /// Returns the fault that still has an "after" effect.
    async fn before(&self, op: Op, path: &Path) -> object_store::Result<Option<Fault>> {
        self.frozen().await?;
        self.run_hook(op, path);
        match self.draw(op, path) {
            None => Ok(None),
            Some(Fault::Error) => Err(injected("injected: 503 Service Unavailable")),
            Some(Fault::Timeout(d)) => {
                tokio::time::sleep(d).await;
                Err(injected("injected: request timed out"))
            }
            Some(Fault::Delay(d)) => {
                tokio::time::sleep(d).await;
                Ok(None)
            }
            Some(f) => Ok(Some(f)),
        }
    }
}

#[async_trait::async_trait]
impl ObjectStore for FaultyStore {
    async fn put_opts(
        &self,
        location: &Path,
        payload: PutPayload,
        opts: PutOptions,
    ) -> object_store::Result<PutResult> {
        match self.before(Op::Put, location).await? {
            Some(Fault::LostResponse) => {
                self.inner.put_opts(location, payload, opts).await?;
                Err(injected(
                    "injected: the answer to a write that landed was lost",
                ))
            }
            Some(Fault::AppliedThenRetried) => {
                self.inner
                    .put_opts(location, payload.clone(), opts.clone())
                    .await?;
                self.inner.put_opts(location, payload, opts).await
            }
            _ => self.inner.put_opts(location, payload, opts).await,
        }
    }

    async fn put_multipart_opts(
        &self,
        location: &Path,
        opts: PutMultipartOptions,
    ) -> object_store::Result<Box<dyn MultipartUpload>> {
        self.before(Op::Multipart, location).await?;
        self.inner.put_multipart_opts(location, opts).await
    }

    async fn get_opts(
        &self,
        location: &Path,
        options: GetOptions,
    ) -> object_store::Result<GetResult> {
        let fault = self.before(Op::Get, location).await?;
        let got = self.inner.get_opts(location, options).await?;
        let (cut, extra) = match fault {
            Some(Fault::Truncated) => (true, false),
            Some(Fault::Extended) => (false, true),
            _ => return Ok(got),
        };
        let GetResult {
            payload,
            mut meta,
            range,
            attributes,
            extensions,
        } = got;
        let bytes = GetResult {
            payload,
            meta: meta.clone(),
            range: range.clone(),
            attributes: attributes.clone(),
            extensions: extensions.clone(),
        }
        .bytes()
        .await?;
        let mut bytes = bytes.to_vec();
        if cut {
            bytes.pop();
        }
        if extra {
            bytes.extend_from_slice(b"\0garbage");
            meta.size += 8;
        }
        let body = Bytes::from(bytes);
        let stream = futures::stream::once(async move { Ok(body) }).boxed();
        Ok(GetResult {
            payload: GetResultPayload::Stream(stream),
            meta,
            range,
            attributes,
            extensions,
        })
    }

    fn delete_stream(
        &self,
        locations: BoxStream<'static, object_store::Result<Path>>,
    ) -> BoxStream<'static, object_store::Result<Path>> {
        // Drawn per call of the stream, not per path.
        if self.frozen.load(Ordering::SeqCst) {
            return futures::stream::once(async {
                Err(injected("injected: the store did not answer (frozen)"))
            })
            .boxed();
        }
        self.run_hook(Op::Delete, &Path::from(""));
        match self.draw(Op::Delete, &Path::from("")) {
            Some(Fault::Error | Fault::Timeout(_)) => {
                futures::stream::once(async { Err(injected("injected: 503 on delete")) }).boxed()
            }
            _ => self.inner.delete_stream(locations),
        }
    }

    fn list(&self, prefix: Option<&Path>) -> BoxStream<'static, object_store::Result<ObjectMeta>> {
        if self.frozen.load(Ordering::SeqCst) {
            return futures::stream::once(async {
                Err(injected("injected: the store did not answer (frozen)"))
            })
            .boxed();
        }
        self.run_hook(Op::List, prefix.unwrap_or(&Path::from("")));
        match self.draw(Op::List, prefix.unwrap_or(&Path::from(""))) {
            Some(Fault::Error | Fault::Timeout(_)) => {
                futures::stream::once(async { Err(injected("injected: 503 on list")) }).boxed()
            }
            _ => {
                let listed = self.listed.clone();
                self.inner
                    .list(prefix)
                    .inspect(move |item| {
                        if item.is_ok() {
                            listed.fetch_add(1, Ordering::SeqCst);
                        }
                    })
                    .boxed()
            }
        }
    }

    async fn list_with_delimiter(&self, prefix: Option<&Path>) -> object_store::Result<ListResult> {
        self.before(Op::List, prefix.unwrap_or(&Path::from("")))
            .await?;
        self.inner.list_with_delimiter(prefix).await
    }

    async fn copy_opts(
        &self,
        from: &Path,
        to: &Path,
        options: CopyOptions,
    ) -> object_store::Result<()> {
        self.before(Op::Copy, to).await?;
        self.inner.copy_opts(from, to, options).await
    }
}
