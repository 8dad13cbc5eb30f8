//! [`EtcdLock`]: a lease lock held in an etcd cluster, for processes on different machines.
//!
//! The queue is etcd's own lock recipe. Each acquisition grants a lease, puts its own key
//! `<prefix><name>/<lease id>` under that lease (in a transaction that succeeds only if the
//! key is new), and is the holder once no key under the lock's prefix has a lower create
//! revision. Until then it watches only the key with the next lower create revision, its
//! predecessor: a release wakes exactly one waiter, and nothing polls. The holder's create
//! revision is its fencing token.
//!
//! Everything that talks to etcd runs as tasks on one tokio runtime (etcd-client is built
//! on tonic): the acquisition, the lease's keep-alive, the watch on the held key, and the
//! revocations that `Drop` cannot await. The futures handed to the caller only wait for
//! those tasks, so they can be polled from any executor.

use std::fmt;
use std::future::Future;
use std::io;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use async_io::Timer;
use etcd_client::{
    Client, Compare, CompareOp, EventType, GetOptions, LeaseGrantOptions, PutOptions, SortOrder,
    SortTarget, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use futures_lite::future;
use tokio::runtime::Handle;
use tokio::sync::{watch, OnceCell};
use tokio::task::JoinHandle;

use crate::acquire::Limit;
use crate::error::Action;
use crate::holder::HeldBy;
use crate::soft::lease::{LeaseCompromise, OnCompromise};
use crate::trace::debug;
use crate::{CompromiseReason, Error, ErrorKind};

/// The key prefix locks use unless told otherwise.
const DEFAULT_PREFIX: &str = "async-filelock/";
/// The lease TTL locks use unless told otherwise.
const DEFAULT_TTL: Duration = Duration::from_secs(30);

/// Where an [`EtcdLock`] finds its cluster: a connected [`etcd_client::Client`], or the
/// endpoints of one, connected to on the first acquisition and shared by the lock's clones.
///
/// Built with `From`: `EtcdLock::new(client, ..)`, `EtcdLock::new("http://127.0.0.1:2379",
/// ..)`, `EtcdLock::new(["http://a:2379", "http://b:2379"], ..)`, `EtcdLock::new(vec![..],
/// ..)`. Pass a client to set TLS, authentication or timeouts
/// ([`etcd_client::ConnectOptions`]).
pub struct EtcdConnection {
    endpoints: Vec<String>,
    client: OnceCell<Client>,
}

impl EtcdConnection {
    /// The client, connecting first if this names endpoints.
    async fn client(&self, key: &str) -> Result<Client, Error> {
        self.client
            .get_or_try_init(|| async {
                Client::connect(&self.endpoints, None).await.map_err(|e| {
                    etcd_error(key, "cannot connect to etcd", e)
                        .with_detail(format!("cannot connect to etcd at {:?}", self.endpoints))
                })
            })
            .await
            .cloned()
    }
}

impl From<Client> for EtcdConnection {
    fn from(client: Client) -> EtcdConnection {
        EtcdConnection {
            endpoints: Vec::new(),
            client: OnceCell::new_with(Some(client)),
        }
    }
}

impl From<&str> for EtcdConnection {
    fn from(endpoint: &str) -> EtcdConnection {
        EtcdConnection::from(vec![endpoint.to_owned()])
    }
}

impl From<String> for EtcdConnection {
    fn from(endpoint: String) -> EtcdConnection {
        EtcdConnection::from(vec![endpoint])
    }
}

impl From<Vec<String>> for EtcdConnection {
    fn from(endpoints: Vec<String>) -> EtcdConnection {
        EtcdConnection {
            endpoints,
            client: OnceCell::new(),
        }
    }
}

impl From<&[&str]> for EtcdConnection {
    fn from(endpoints: &[&str]) -> EtcdConnection {
        EtcdConnection::from(endpoints.iter().map(|e| e.to_string()).collect::<Vec<_>>())
    }
}

impl<const N: usize> From<[&str; N]> for EtcdConnection {
    fn from(endpoints: [&str; N]) -> EtcdConnection {
        EtcdConnection::from(&endpoints[..])
    }
}

impl fmt::Debug for EtcdConnection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdConnection")
            .field("endpoints", &self.endpoints)
            .field("connected", &self.client.initialized())
            .finish()
    }
}

/// What every clone of one lock shares.
struct Inner {
    connection: EtcdConnection,
    name: String,
    prefix: String,
    ttl: Duration,
    metadata: String,
    timeout: Option<Duration>,
    runtime: Option<Handle>,
    on_compromise: Option<OnCompromise>,
}

impl Inner {
    /// The prefix every key of this lock's queue starts with: `<prefix><name>/`.
    fn queue(&self) -> String {
        format!("{}{}/", self.prefix, self.name)
    }

    /// The granted TTL in whole seconds, as etcd takes it.
    fn ttl_secs(&self) -> i64 {
        i64::try_from(self.ttl.as_secs()).unwrap_or(i64::MAX)
    }
}

/// A lock held in an etcd cluster: one holder at a time among every process, on any machine,
/// that uses the same cluster, key prefix and name. Available with the `etcd` feature.
///
/// It has the shape of [`SoftFileLease`](crate::SoftFileLease): the hold is an etcd lease
/// with a TTL (30 s by default) that the guard keeps alive; a holder that dies or loses the
/// cluster for the TTL loses the lock, and learns of it through
/// [`EtcdLockGuard::lost`], [`EtcdLockGuard::is_lost`] and the
/// [`on_compromise`](EtcdLockBuilder::on_compromise) callback. Each hold carries a fencing
/// token, [`EtcdLockGuard::fence`]: the create revision of its key, which strictly increases
/// across holders, cluster-wide, so a resource can refuse writes from a superseded holder.
///
/// Waiters queue in the order their keys were created and each watches only its predecessor
/// (etcd's lock recipe): no polling, and a release wakes one waiter. A waiter's own lease is
/// kept alive while it waits, so a waiter that dies leaves the queue within the TTL.
///
/// # Runtime
///
/// etcd-client runs on tokio, so this lock does too (the rest of the crate needs no
/// runtime). Every request runs in a task on one tokio runtime: the one set with
/// [`runtime`](EtcdLockBuilder::runtime), or else the one current where the acquisition is
/// first polled. With a runtime set, the futures can be polled from any executor.
///
/// # Keys
///
/// Keys are `<prefix><name>/<lease id in 16 hex digits>` (the prefix is `async-filelock/`
/// by default), and each key's value is the holder's [metadata](EtcdLockBuilder::metadata),
/// `pid <pid> on <host>` by default, which errors and [`EtcdLock::holder`] report. An
/// operator can see the queue with `etcdctl get --prefix async-filelock/<name>/`, and break
/// a hold with `etcdctl lease revoke <lease id>` (the holder is then told its lock was lost).
///
/// # Examples
///
/// ```no_run
/// use std::time::Duration;
/// use async_filelock::EtcdLock;
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), async_filelock::Error> {
/// let lock = EtcdLock::builder("http://127.0.0.1:2379", "nightly-report")
///     .ttl(Duration::from_secs(10))
///     .build()?;
/// let guard = lock.acquire().timeout(Duration::from_secs(60)).await?;
/// // Hand guard.fence() to the storage with every write; stop if the lock is lost.
/// futures_lite::future::or(
///     async { /* ... the work ... */ },
///     async { eprintln!("{}", guard.lost().await) },
/// )
/// .await;
/// guard.release().await?;
/// # Ok(())
/// # }
/// ```
#[derive(Clone)]
pub struct EtcdLock {
    inner: Arc<Inner>,
}

impl EtcdLock {
    /// A lock named `name` on the cluster `connection` reaches, with the default options. No
    /// I/O happens until the first acquisition.
    pub fn new(connection: impl Into<EtcdConnection>, name: impl Into<String>) -> EtcdLock {
        EtcdLock {
            inner: Arc::new(EtcdLock::builder(connection, name).inner()),
        }
    }

    /// Starts building a lock with options.
    pub fn builder(
        connection: impl Into<EtcdConnection>,
        name: impl Into<String>,
    ) -> EtcdLockBuilder {
        EtcdLockBuilder {
            connection: connection.into(),
            name: name.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            ttl: DEFAULT_TTL,
            metadata: None,
            timeout: None,
            runtime: None,
            on_compromise: None,
        }
    }

    /// The lock's name.
    pub fn name(&self) -> &str {
        &self.inner.name
    }

    /// The prefix of every key in the lock's queue: `<prefix><name>/`.
    pub fn key_prefix(&self) -> String {
        self.inner.queue()
    }

    /// The TTL of each hold's lease.
    pub fn ttl(&self) -> Duration {
        self.inner.ttl
    }

    /// The default time limit of an acquisition (`None`: wait until acquired).
    pub fn timeout(&self) -> Option<Duration> {
        self.inner.timeout
    }

    /// Waits until the lock is ours.
    ///
    /// # Errors
    ///
    /// - [`Timeout`](ErrorKind::Timeout) when a time limit ran out; it names the holder's
    ///   lease and metadata.
    /// - [`LeaseLost`](ErrorKind::LeaseLost) when this waiter's own lease ended while it
    ///   waited (etcd unreachable for the TTL, or the lease revoked).
    /// - [`Io`](ErrorKind::Io) when an etcd request failed or went unanswered for a TTL; the
    ///   source is the client's error.
    /// - [`InvalidInput`](ErrorKind::InvalidInput) for an empty name, and
    ///   [`Unsupported`](ErrorKind::Unsupported) when no tokio runtime is set or current.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future at any point leaves no key and no watch behind: the acquisition's
    /// task is aborted, which drops its watch and spawns the revocation of its lease on the
    /// runtime (etcd deletes the key with the lease). The revocation is one request that
    /// `Drop` cannot wait for, so the key disappears a round trip later; if the runtime has
    /// shut down meanwhile, the lease expires after its TTL instead.
    pub fn acquire(&self) -> EtcdAcquire {
        EtcdAcquire {
            inner: self.inner.clone(),
            limit: Limit::Default,
            task: None,
        }
    }

    /// Makes one attempt, without waiting. It is a future too: every step is a request to
    /// etcd.
    ///
    /// # Errors
    ///
    /// [`WouldBlock`](ErrorKind::WouldBlock) when the lock is held (naming the holder's lease
    /// and metadata); the attempt's key is gone before the error is returned. Otherwise as
    /// [`acquire`](EtcdLock::acquire).
    ///
    /// # Cancel safety
    ///
    /// As [`acquire`](EtcdLock::acquire).
    pub fn try_acquire(&self) -> EtcdAcquire {
        EtcdAcquire {
            inner: self.inner.clone(),
            limit: Limit::Once,
            task: None,
        }
    }

    /// The current holder, `None` when nobody holds the lock.
    ///
    /// # Errors
    ///
    /// As for [`acquire`](EtcdLock::acquire), when etcd cannot be reached.
    pub async fn holder(&self) -> Result<Option<EtcdHolder>, Error> {
        let inner = self.inner.clone();
        let handle = runtime(&inner)?;
        let task = handle.spawn(async move {
            let queue = inner.queue();
            let mut client = inner.connection.client(&queue).await?;
            let options = GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1);
            let response = request(&queue, "reading the holder", inner.ttl, async {
                client.get(queue.as_str(), Some(options)).await
            })
            .await?;
            Ok(response.kvs().first().map(EtcdHolder::from_kv))
        });
        joined(&self.inner.queue(), task).await
    }
}

impl fmt::Debug for EtcdLock {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLock")
            .field("key_prefix", &self.inner.queue())
            .field("ttl", &self.inner.ttl)
            .field("timeout", &self.inner.timeout)
            .field("connection", &self.inner.connection)
            .finish()
    }
}

/// Options for an [`EtcdLock`].
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct EtcdLockBuilder {
    connection: EtcdConnection,
    name: String,
    prefix: String,
    ttl: Duration,
    metadata: Option<String>,
    timeout: Option<Duration>,
    runtime: Option<Handle>,
    on_compromise: Option<OnCompromise>,
}

impl EtcdLockBuilder {
    /// The TTL of each hold's lease (default 30 s), in whole seconds (a fraction is rounded
    /// up). A holder that stops keeping its lease alive (killed, partitioned) loses the lock
    /// this long after its last keep-alive; etcd may raise a very short TTL to its minimum
    /// (1.5 election timeouts, 2 s by default).
    pub fn ttl(mut self, ttl: Duration) -> Self {
        self.ttl = ttl;
        self
    }

    /// The start of every key (default `async-filelock/`): keys are
    /// `<prefix><name>/<lease id>`. Every contender must use the same prefix and name.
    pub fn key_prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The value stored in this process's keys, which errors and [`EtcdLock::holder`] report
    /// (default: `pid <pid> on <host>`).
    pub fn metadata(mut self, metadata: impl Into<String>) -> Self {
        self.metadata = Some(metadata.into());
        self
    }

    /// The default time limit of an acquisition.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }

    /// The tokio runtime the lock's requests run on (default: the one current when an
    /// acquisition is first polled). With it set, the lock's futures can be polled from any
    /// executor.
    pub fn runtime(mut self, handle: Handle) -> Self {
        self.runtime = Some(handle);
        self
    }

    /// Called, from a task on the lock's runtime, when a held lock is lost. The holder should
    /// stop touching what the lock protects.
    pub fn on_compromise(
        mut self,
        callback: impl Fn(&LeaseCompromise) + Send + Sync + 'static,
    ) -> Self {
        self.on_compromise = Some(Arc::new(callback));
        self
    }

    /// Checks the options and builds the lock.
    ///
    /// # Errors
    ///
    /// [`InvalidInput`](ErrorKind::InvalidInput) for an empty name, a name containing `/`,
    /// or a zero TTL.
    pub fn build(self) -> Result<EtcdLock, Error> {
        let fail = |why: &'static str| {
            Err(Error::invalid(why)
                .with_path(Path::new(&format!("{}{}/", self.prefix, self.name)))
                .during(Action::Configure))
        };
        if self.name.is_empty() {
            return fail("the lock's name is empty");
        }
        if self.name.contains('/') {
            return fail("the lock's name contains '/', which would nest one queue in another");
        }
        if self.ttl.is_zero() {
            return fail("the lease TTL must be positive");
        }
        Ok(EtcdLock {
            inner: Arc::new(self.inner()),
        })
    }

    fn inner(self) -> Inner {
        let metadata = self.metadata.unwrap_or_else(|| {
            format!(
                "pid {} on {}",
                std::process::id(),
                crate::soft::identity::host_name()
            )
        });
        let secs = self.ttl.as_secs() + u64::from(self.ttl.subsec_nanos() > 0);
        Inner {
            connection: self.connection,
            name: self.name,
            prefix: self.prefix,
            ttl: Duration::from_secs(secs),
            metadata,
            timeout: self.timeout,
            runtime: self.runtime,
            on_compromise: self.on_compromise,
        }
    }
}

impl fmt::Debug for EtcdLockBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLockBuilder")
            .field("name", &self.name)
            .field("key_prefix", &self.prefix)
            .field("ttl", &self.ttl)
            .field("timeout", &self.timeout)
            .field("on_compromise", &self.on_compromise.is_some())
            .finish()
    }
}

/// The holder of an [`EtcdLock`], as its key in etcd describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EtcdHolder {
    key: String,
    lease: i64,
    fence: u64,
    metadata: String,
}

impl EtcdHolder {
    fn from_kv(kv: &etcd_client::KeyValue) -> EtcdHolder {
        EtcdHolder {
            key: String::from_utf8_lossy(kv.key()).into_owned(),
            lease: kv.lease(),
            fence: u64::try_from(kv.create_revision()).unwrap_or(0),
            metadata: String::from_utf8_lossy(kv.value()).into_owned(),
        }
    }

    /// The holder's key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The holder's lease id (revoke it with `etcdctl lease revoke <id in hex>` to break the
    /// hold).
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// The holder's fencing token, the create revision of its key.
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// The metadata the holder stored (`pid <pid> on <host>` by default).
    pub fn metadata(&self) -> &str {
        &self.metadata
    }
}

impl fmt::Display for EtcdHolder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lease {:x} ({})", self.lease, self.metadata)
    }
}

/// The future returned by [`EtcdLock::acquire`] and [`EtcdLock::try_acquire`]; resolves to
/// the guard.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct EtcdAcquire {
    inner: Arc<Inner>,
    limit: Limit,
    task: Option<JoinHandle<Result<EtcdLockGuard, Error>>>,
}

impl EtcdAcquire {
    /// Limits this acquisition to `timeout`, counted from its first poll. Running out is a
    /// [`Timeout`](ErrorKind::Timeout) error; with `Duration::ZERO` the acquisition joins
    /// the queue once and gives up if anyone is ahead.
    pub fn timeout(mut self, timeout: Duration) -> EtcdAcquire {
        if self.task.is_none() {
            self.limit = Limit::After(Some(timeout));
        }
        self
    }
}

impl Future for EtcdAcquire {
    type Output = Result<EtcdLockGuard, Error>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = &mut *self;
        if this.task.is_none() {
            let handle = match runtime(&this.inner) {
                Ok(handle) => handle,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let limit = this.limit.or(this.inner.timeout);
            let work = acquisition(this.inner.clone(), handle.clone(), limit, Instant::now());
            this.task = Some(handle.spawn(work));
        }
        let task = this.task.as_mut().expect("spawned above");
        let out = match Pin::new(task).poll(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(out) => out,
        };
        this.task = None;
        Poll::Ready(out.unwrap_or_else(|e| Err(task_failed(&this.inner.queue(), e))))
    }
}

impl Drop for EtcdAcquire {
    fn drop(&mut self) {
        // The task drops its watch and spawns the revocation of its lease as it is dropped;
        // a guard it finished with is dropped with its output, which revokes it too.
        if let Some(task) = self.task.take() {
            task.abort();
        }
    }
}

impl fmt::Debug for EtcdAcquire {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdAcquire")
            .field("key_prefix", &self.inner.queue())
            .field("limit", &self.limit.or(self.inner.timeout))
            .field("started", &self.task.is_some())
            .finish()
    }
}

/// The runtime the lock's tasks run on.
fn runtime(inner: &Inner) -> Result<Handle, Error> {
    if let Some(handle) = &inner.runtime {
        return Ok(handle.clone());
    }
    Handle::try_current().map_err(|_| {
        let mut e = Error::io(
            Path::new(&inner.queue()),
            io::Error::new(io::ErrorKind::Unsupported, "no tokio runtime"),
        );
        e = e.with_detail(
            "an EtcdLock runs its requests on tokio (etcd-client needs it): poll it inside a \
             tokio runtime or set one with EtcdLockBuilder::runtime",
        );
        e
    })
}

/// Awaits a task of the lock's, turning a panic or an abort into an error.
async fn joined<T>(key: &str, task: JoinHandle<Result<T, Error>>) -> Result<T, Error> {
    task.await.unwrap_or_else(|e| Err(task_failed(key, e)))
}

fn task_failed(key: &str, e: tokio::task::JoinError) -> Error {
    if e.is_panic() {
        std::panic::resume_unwind(e.into_panic());
    }
    Error::io(Path::new(key), io::Error::other(e))
        .with_detail("the lock's task was cancelled: its tokio runtime shut down")
}

/// An etcd client error during `what` on `key`.
fn etcd_error(key: &str, what: &str, e: etcd_client::Error) -> Error {
    Error::io(Path::new(key), io::Error::other(e)).with_detail(format!("etcd: {what} failed"))
}

/// Runs one etcd request, bounded by `bound`: a request unanswered for a whole TTL is as
/// good as failed (a black-holed connection raises no error of its own).
async fn request<T>(
    key: &str,
    what: &str,
    bound: Duration,
    call: impl Future<Output = Result<T, etcd_client::Error>>,
) -> Result<T, Error> {
    let call = async { call.await.map_err(|e| etcd_error(key, what, e)) };
    let expire = async {
        Timer::after(bound).await;
        Err(Error::io(
            Path::new(key),
            io::Error::new(io::ErrorKind::TimedOut, "no answer from etcd"),
        )
        .with_detail(format!("etcd: {what} went unanswered for {bound:?}")))
    };
    future::or(call, expire).await
}

/// A lease this acquisition or hold owns: revoked when dropped (by a task spawned on the
/// runtime, since `Drop` cannot wait), unless disarmed.
struct Withdraw {
    client: Client,
    handle: Handle,
    lease: i64,
    armed: bool,
}

impl Withdraw {
    /// Revokes the lease now and waits for it (bounded by `bound`); left armed if that
    /// failed, so dropping it tries again.
    async fn revoke(&mut self, key: &str, bound: Duration) -> Result<(), Error> {
        let mut client = self.client.clone();
        let lease = self.lease;
        let result = request(key, "revoking the lease", bound, async {
            client.lease_revoke(lease).await
        })
        .await;
        match result {
            Ok(_) => {
                self.armed = false;
                Ok(())
            }
            // Gone already (expired, or revoked by an operator): nothing is left to withdraw.
            Err(e) if lease_not_found(&e) => {
                self.armed = false;
                Ok(())
            }
            Err(e) => Err(e.during(Action::Release)),
        }
    }
}

impl Drop for Withdraw {
    fn drop(&mut self) {
        if !self.armed {
            return;
        }
        let mut client = self.client.clone();
        let lease = self.lease;
        debug!(lease = lease, "revoking an etcd lease from Drop");
        // A runtime that is shutting down drops the task: the lease then expires by its TTL.
        drop(self.handle.spawn(async move {
            let _ = client.lease_revoke(lease).await;
        }));
    }
}

/// Whether an error says the lease does not exist (any more).
fn lease_not_found(e: &Error) -> bool {
    use std::error::Error as _;
    e.source()
        .is_some_and(|s| s.to_string().contains("requested lease not found"))
}

/// A task aborted when this is dropped.
struct Abort(JoinHandle<()>);

impl Drop for Abort {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a hold's loss is reported: once, to the guard (and its `lost()` futures) and to the
/// callback; before the hold starts, to the waiting acquisition alone.
struct Loss {
    key: String,
    state: Mutex<LossState>,
    tx: watch::Sender<Option<LeaseCompromise>>,
    on_compromise: Option<OnCompromise>,
}

#[derive(Default)]
struct LossState {
    held: bool,
    fence: u64,
    /// The loss, once reported (the watch channel gets it after the callback ran).
    lost: Option<LeaseCompromise>,
}

impl Loss {
    fn new(key: String, on_compromise: Option<OnCompromise>) -> Arc<Loss> {
        Arc::new(Loss {
            key,
            state: Mutex::new(LossState::default()),
            tx: watch::channel(None).0,
            on_compromise,
        })
    }

    /// Reports the first loss; later ones are ignored. The callback runs before the guard's
    /// `lost()` futures resolve.
    fn report(&self, lease: i64, reason: CompromiseReason, error: Option<io::Error>) {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if state.lost.is_some() {
            return;
        }
        let lost = LeaseCompromise::new(
            Path::new(&self.key),
            &format!("{lease:016x}"),
            state.fence,
            reason,
            error,
        );
        debug!(key = %self.key, reason = %reason, "etcd lock lost");
        state.lost = Some(lost.clone());
        let held = state.held;
        drop(state);
        if held {
            if let Some(callback) = &self.on_compromise {
                callback(&lost);
            }
        }
        self.tx.send_replace(Some(lost));
    }

    /// Marks the hold as started with `fence`; the loss instead if it came first.
    fn start_hold(&self, fence: u64) -> Result<(), LeaseCompromise> {
        let mut state = self.state.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(lost) = &state.lost {
            return Err(lost.clone());
        }
        state.held = true;
        state.fence = fence;
        Ok(())
    }

    fn lost(&self) -> Option<LeaseCompromise> {
        self.state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .lost
            .clone()
    }

    /// Resolves when the loss is reported.
    fn wait(&self) -> impl Future<Output = LeaseCompromise> + Send + 'static {
        let mut rx = self.tx.subscribe();
        async move {
            let Ok(lost) = rx.wait_for(Option::is_some).await else {
                // The sender lives as long as `self`, which the caller keeps.
                return future::pending().await;
            };
            lost.clone().expect("waited for a loss")
        }
    }
}

/// A loss while waiting, as the acquisition's error.
fn lost_while_waiting(key: &str, lost: &LeaseCompromise) -> Error {
    Error::lease_lost(
        Path::new(key),
        format!(
            "this waiter's etcd lease {} ended before it got the lock ({})",
            lost.token(),
            lost.reason()
        ),
        lost.error()
            .map(|e| io::Error::new(e.kind(), e.to_string())),
    )
}

/// A client-chosen lease id: positive, and known before the grant is sent, so that an
/// acquisition dropped mid-grant can still revoke it.
fn lease_id() -> i64 {
    fastrand::i64(1..i64::MAX)
}

/// One acquisition, from the lease grant to the guard, as a task on the runtime.
async fn acquisition(
    inner: Arc<Inner>,
    handle: Handle,
    limit: Limit,
    start: Instant,
) -> Result<EtcdLockGuard, Error> {
    let queue = inner.queue();
    if inner.name.is_empty() || inner.name.contains('/') {
        return Err(
            Error::invalid("the lock's name is empty or contains '/'").with_path(Path::new(&queue))
        );
    }
    let bound = inner.ttl;
    let mut client = inner.connection.client(&queue).await?;

    // The lease, with an id chosen here: an acquisition dropped while the grant is in flight
    // revokes it all the same.
    let mut withdraw = loop {
        let lease = lease_id();
        let mut withdraw = Withdraw {
            client: client.clone(),
            handle: handle.clone(),
            lease,
            armed: true,
        };
        let options = LeaseGrantOptions::new().with_id(lease);
        let granted = request(&queue, "granting a lease", bound, async {
            client.lease_grant(inner.ttl_secs(), Some(options)).await
        })
        .await;
        match granted {
            Ok(_) => break withdraw,
            Err(e) if e.to_string().contains("lease already exists") => {
                // Another process's lease: never revoke it.
                withdraw.armed = false;
                continue;
            }
            Err(e) => return Err(e),
        }
    };
    let lease = withdraw.lease;
    let key = format!("{queue}{lease:016x}");
    let loss = Loss::new(key.clone(), inner.on_compromise.clone());
    let keep_alive =
        Abort(handle.spawn(keep_alive(client.clone(), lease, inner.ttl, loss.clone())));

    // Join the queue, and read it in the same round trip: the put is the transaction's last
    // write, so the newest key is ours and the next newest is our predecessor.
    let put = Txn::new()
        .when([Compare::create_revision(key.as_str(), CompareOp::Equal, 0)])
        .and_then([
            TxnOp::put(
                key.as_str(),
                inner.metadata.as_str(),
                Some(PutOptions::new().with_lease(lease)),
            ),
            TxnOp::get(
                queue.as_str(),
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_sort(SortTarget::Create, SortOrder::Descend)
                        .with_limit(2),
                ),
            ),
            first_holder(&queue),
        ]);
    let joined = request(&key, "creating the waiter's key", bound, async {
        client.txn(put).await
    })
    .await?;
    if !joined.succeeded() {
        return Err(Error::protocol(
            Path::new(&key),
            "the key of this waiter's fresh lease exists already",
        ));
    }
    let fence = joined.header().map_or(0, |h| h.revision());
    debug!(key = %key, fence = fence, "joined the etcd lock queue");
    let mut read = gets(&joined);
    let newest = read.next().map(|g| g.kvs().to_vec()).unwrap_or_default();
    let view = match newest.as_slice() {
        [ours, rest @ ..] if ours.key() == key.as_bytes() => Some(QueueView {
            revision: fence,
            predecessor: rest.first().cloned(),
            holder: read
                .next()
                .and_then(|g| g.kvs().first().map(EtcdHolder::from_kv)),
        }),
        // Not what a lone put produces: read the queue again.
        _ => None,
    };

    let deadline = match limit {
        Limit::Once => None,
        limit => limit.deadline(start),
    };
    let holder: Mutex<Option<EtcdHolder>> = Mutex::new(None);
    let once = limit == Limit::Once;
    let wait = wait_turn(
        &mut client,
        view,
        &key,
        &queue,
        fence,
        once,
        deadline,
        &loss,
        &holder,
        bound,
    );
    let waited = match deadline {
        None => wait.await,
        Some(deadline) => {
            let expire = async {
                Timer::at(deadline).await;
                Err(Turn::Expired)
            };
            future::or(wait, expire).await
        }
    };
    let failure = match waited {
        Ok(()) => None,
        Err(Turn::Failed(e)) => Some(e),
        Err(Turn::Busy | Turn::Expired) => {
            let holder = holder
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .as_ref()
                .map(ToString::to_string);
            Some(if once {
                Error::would_block(Path::new(&queue), false)
                    .with_holder(holder.map(HeldBy::Unprobeable))
            } else {
                Error::timeout(Path::new(&queue), start.elapsed())
                    .with_holder(holder.map(HeldBy::Unprobeable))
            })
        }
    };
    if let Some(e) = failure {
        drop(keep_alive);
        // Leave the queue before reporting: a caller that looks finds no key of ours.
        let _ = withdraw.revoke(&key, bound).await;
        return Err(e);
    }
    let fence = u64::try_from(fence).unwrap_or(0);
    if let Err(lost) = loss.start_hold(fence) {
        return Err(lost_while_waiting(&key, &lost));
    }
    let watch_key = Abort(handle.spawn(watch_own_key(
        client.clone(),
        key.clone(),
        lease,
        fence as i64,
        inner.ttl,
        loss.clone(),
    )));
    debug!(key = %key, fence = fence, waited = ?start.elapsed(), "etcd lock acquired");
    Ok(EtcdLockGuard {
        inner,
        key,
        lease,
        fence,
        loss,
        _tasks: [keep_alive, watch_key],
        withdraw: Some(withdraw),
    })
}

/// Why waiting for the turn ended without it.
enum Turn {
    /// A single attempt found a predecessor.
    Busy,
    /// The deadline passed.
    Expired,
    Failed(Error),
}

impl From<Error> for Turn {
    fn from(e: Error) -> Turn {
        Turn::Failed(e)
    }
}

/// Waits until no key in the queue has a lower create revision than ours (`fence`),
/// watching one predecessor at a time.
#[allow(clippy::too_many_arguments)]
async fn wait_turn(
    client: &mut Client,
    mut view: Option<QueueView>,
    key: &str,
    queue: &str,
    fence: i64,
    once: bool,
    deadline: Option<Instant>,
    loss: &Loss,
    holder: &Mutex<Option<EtcdHolder>>,
    bound: Duration,
) -> Result<(), Turn> {
    loop {
        let view = match view.take() {
            Some(view) => view,
            None => read_queue(client, key, queue, fence, loss, bound).await?,
        };
        let QueueView {
            revision,
            predecessor,
            holder: first,
        } = view;
        let Some(predecessor) = predecessor else {
            return Ok(());
        };
        *holder.lock().unwrap_or_else(PoisonError::into_inner) = first;
        if once {
            return Err(Turn::Busy);
        }
        if deadline.is_some_and(|d| Instant::now() >= d) {
            return Err(Turn::Expired);
        }
        debug!(key = %key, predecessor = %String::from_utf8_lossy(predecessor.key()), "waiting for the predecessor");
        // Watch the predecessor from just after the revision we read it at, so its deletion
        // cannot slip between the read and the watch. A lost lease ends the wait too.
        let deleted = watch_deletion(client, predecessor.key(), revision + 1);
        let lost = async { Err(Turn::Failed(lost_while_waiting(key, &loss.wait().await))) };
        match future::or(deleted, lost).await {
            Ok(()) => continue,
            Err(Turn::Failed(e)) if e.kind() != ErrorKind::LeaseLost => {
                // The watch broke (etcd restarting, say): read the queue again after a
                // pause. The keep-alive decides whether our lease is lost meanwhile.
                debug!(key = %key, error = %e, "watch failed, reading the queue again");
                Timer::after(retry_pause(bound)).await;
            }
            Err(e) => return Err(e),
        }
    }
}

/// What one read of the queue showed: its revision, our predecessor, and the holder.
struct QueueView {
    revision: i64,
    predecessor: Option<etcd_client::KeyValue>,
    holder: Option<EtcdHolder>,
}

/// A range read of the key with the lowest create revision under `queue`: the holder.
fn first_holder(queue: &str) -> TxnOp {
    TxnOp::get(
        queue,
        Some(
            GetOptions::new()
                .with_prefix()
                .with_sort(SortTarget::Create, SortOrder::Ascend)
                .with_limit(1),
        ),
    )
}

/// The range reads of a transaction's response, in order.
fn gets(response: &etcd_client::TxnResponse) -> impl Iterator<Item = etcd_client::GetResponse> {
    response.op_responses().into_iter().filter_map(|r| match r {
        TxnOpResponse::Get(get) => Some(get),
        _ => None,
    })
}

/// Reads, in one transaction, that our key is still ours, our predecessor and the holder.
async fn read_queue(
    client: &mut Client,
    key: &str,
    queue: &str,
    fence: i64,
    loss: &Loss,
    bound: Duration,
) -> Result<QueueView, Turn> {
    let check = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, fence)])
        .and_then([
            TxnOp::get(
                queue,
                Some(
                    GetOptions::new()
                        .with_prefix()
                        .with_max_create_revision(fence - 1)
                        .with_sort(SortTarget::Create, SortOrder::Descend)
                        .with_limit(1),
                ),
            ),
            first_holder(queue),
        ]);
    let checked = request(key, "reading the queue", bound, async {
        client.txn(check).await
    })
    .await?;
    if !checked.succeeded() {
        let lost = match loss.lost() {
            Some(lost) => lost,
            None => LeaseCompromise::new(
                Path::new(key),
                &key[queue.len()..],
                0,
                CompromiseReason::KeyDeleted,
                None,
            ),
        };
        return Err(Turn::Failed(lost_while_waiting(key, &lost)));
    }
    let mut read = gets(&checked);
    Ok(QueueView {
        revision: checked.header().map_or(0, |h| h.revision()),
        predecessor: read.next().and_then(|g| g.kvs().first().cloned()),
        holder: read
            .next()
            .and_then(|g| g.kvs().first().map(EtcdHolder::from_kv)),
    })
}

/// The pause before a request is tried again after a failure.
fn retry_pause(ttl: Duration) -> Duration {
    (ttl / 6).min(Duration::from_millis(500))
}

/// Resolves when `key` is deleted at or after `revision` (or the watch is cancelled, after
/// which the caller reads the queue again).
async fn watch_deletion(client: &mut Client, key: &[u8], revision: i64) -> Result<(), Turn> {
    let shown = String::from_utf8_lossy(key).into_owned();
    let options = WatchOptions::new().with_start_revision(revision);
    let mut stream = client
        .watch(key, Some(options))
        .await
        .map_err(|e| etcd_error(&shown, "watching the predecessor", e))?;
    loop {
        let message = stream
            .message()
            .await
            .map_err(|e| etcd_error(&shown, "watching the predecessor", e))?;
        let Some(message) = message else {
            return Err(Turn::Failed(etcd_error(
                &shown,
                "watching the predecessor",
                etcd_client::Error::WatchError("the watch stream ended".into()),
            )));
        };
        if message.canceled() {
            // Compacted past our revision, say: the queue is read again.
            return Ok(());
        }
        if message
            .events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            return Ok(());
        }
    }
}

/// Keeps `lease` alive every third of its TTL, until the task is aborted or the lease is
/// lost: etcd says it is gone, or no keep-alive was confirmed for five sixths of the TTL
/// (before etcd, which renewed it no earlier than we asked, could expire it).
async fn keep_alive(client: Client, lease: i64, ttl: Duration, loss: Arc<Loss>) {
    let interval = ttl / 3;
    let margin = ttl / 6;
    let mut client = client;
    let mut stream = None;
    let mut last_error: Option<io::Error> = None;
    let mut valid_until = Instant::now() + ttl - margin;
    loop {
        let sent = Instant::now();
        if stream.is_none() {
            match future::or(
                async { Some(client.lease_keep_alive(lease).await) },
                async {
                    Timer::at(valid_until).await;
                    None
                },
            )
            .await
            {
                Some(Ok(opened)) => stream = Some(opened),
                Some(Err(e)) => last_error = Some(io::Error::other(e)),
                None => {}
            }
        }
        if let Some((keeper, responses)) = &mut stream {
            let answer = async {
                keeper.keep_alive().await?;
                responses.message().await
            };
            let timed = async {
                Timer::at(valid_until.min(sent + interval)).await;
                Err(etcd_client::Error::LeaseKeepAliveError(
                    "no keep-alive response".into(),
                ))
            };
            match future::or(answer, timed).await {
                Ok(Some(response)) if response.ttl() > 0 => {
                    let granted = Duration::from_secs(response.ttl().unsigned_abs());
                    valid_until = sent + granted - margin.min(granted / 2);
                    last_error = None;
                }
                Ok(Some(_)) => {
                    loss.report(lease, CompromiseReason::LeaseExpired, None);
                    return;
                }
                Ok(None) => {
                    stream = None;
                    last_error = Some(io::Error::other("the keep-alive stream ended"));
                }
                Err(e) => {
                    stream = None;
                    last_error = Some(io::Error::other(e));
                }
            }
        }
        if Instant::now() >= valid_until {
            loss.report(lease, CompromiseReason::RefreshFailed, last_error.take());
            // Revoke what may survive on the server (etcd renews leases when it restarts),
            // so that the next waiter need not wait for the TTL; until aborted.
            loop {
                match client.lease_revoke(lease).await {
                    Ok(_) => return,
                    Err(e) if e.to_string().contains("requested lease not found") => return,
                    Err(_) => Timer::after(interval).await,
                };
            }
        }
        let next = if stream.is_some() {
            sent + interval
        } else {
            Instant::now() + retry_pause(ttl)
        };
        Timer::at(next.min(valid_until)).await;
    }
}

/// Watches the held key and reports the lock lost if it is deleted (by an operator, or by
/// etcd when the lease expired), until the task is aborted.
async fn watch_own_key(
    client: Client,
    key: String,
    lease: i64,
    fence: i64,
    ttl: Duration,
    loss: Arc<Loss>,
) {
    let mut client = client;
    let mut from = fence + 1;
    loop {
        let outcome: Result<bool, etcd_client::Error> = async {
            let options = WatchOptions::new().with_start_revision(from);
            let mut stream = client.watch(key.as_str(), Some(options)).await?;
            while let Some(message) = stream.message().await? {
                if message.canceled() {
                    // Compacted: read the key instead.
                    let now = client.get(key.as_str(), None).await?;
                    let ours = now
                        .kvs()
                        .first()
                        .is_some_and(|kv| kv.create_revision() == fence);
                    if !ours {
                        return Ok(true);
                    }
                    from = now.header().map_or(from, |h| h.revision() + 1);
                    return Ok(false);
                }
                if let Some(h) = message.header() {
                    from = from.max(h.revision() + 1);
                }
                if message
                    .events()
                    .iter()
                    .any(|e| e.event_type() == EventType::Delete)
                {
                    return Ok(true);
                }
            }
            Ok(false)
        }
        .await;
        if let Ok(true) = outcome {
            loss.report(lease, CompromiseReason::KeyDeleted, None);
            return;
        }
        Timer::after(retry_pause(ttl)).await;
    }
}

/// A held [`EtcdLock`]. Dropping it revokes the lease, which deletes the key and lets the
/// next waiter in.
///
/// While it lives, a task keeps the lease alive (every third of the TTL) and another watches
/// the key. If the lease is lost (etcd says it expired or was revoked, keep-alives went
/// unconfirmed for five sixths of the TTL, or the key was deleted), [`lost`](Self::lost)
/// resolves, [`is_lost`](Self::is_lost) turns true and the
/// [`on_compromise`](EtcdLockBuilder::on_compromise) callback runs, once. The holder should
/// then stop: a successor may hold the lock.
///
/// `Drop` cannot wait, so it spawns the revocation on the lock's runtime (if that runtime
/// has shut down, the lease expires by its TTL); [`release`](Self::release) waits for it
/// and reports errors.
#[must_use = "the lock is released as soon as the guard is dropped"]
pub struct EtcdLockGuard {
    inner: Arc<Inner>,
    key: String,
    lease: i64,
    fence: u64,
    loss: Arc<Loss>,
    _tasks: [Abort; 2],
    withdraw: Option<Withdraw>,
}

impl EtcdLockGuard {
    /// The held key, `<prefix><name>/<lease id>`.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The lease id of this hold.
    pub fn lease_id(&self) -> i64 {
        self.lease
    }

    /// The fencing token of this hold: the create revision of its key, strictly greater than
    /// that of every earlier holder of this lock, cluster-wide. Hand it to the protected
    /// resource with each write, and have the resource refuse writes carrying a smaller one
    /// than the largest it has seen (see the `etcd_fencing` example).
    pub fn fence(&self) -> u64 {
        self.fence
    }

    /// How this hold was lost, if it was.
    pub fn compromise(&self) -> Option<LeaseCompromise> {
        self.loss.lost()
    }

    /// Whether this hold was lost.
    pub fn is_lost(&self) -> bool {
        self.loss.lost().is_some()
    }

    /// A future that resolves when this hold is lost (at once if it was). It never resolves
    /// for a hold released first. It owns what it needs, so it can be raced against the
    /// holder's work.
    pub fn lost(&self) -> EtcdLost {
        let loss = self.loss.clone();
        let wait = loss.wait();
        EtcdLost {
            wait: Box::pin(async move {
                let lost = wait.await;
                drop(loss);
                lost
            }),
        }
    }

    /// Revokes the lease and waits for etcd to confirm it, which deletes the key and lets the
    /// next waiter in.
    ///
    /// # Errors
    ///
    /// [`Io`](ErrorKind::Io) when the revocation failed or went unanswered for a TTL; the
    /// lease then expires by its TTL at the latest. A lease already gone is no error.
    ///
    /// # Cancel safety
    ///
    /// Dropping the future leaves the revocation to a task, as dropping the guard does.
    pub async fn release(mut self) -> Result<(), Error> {
        let Some(mut withdraw) = self.withdraw.take() else {
            return Ok(());
        };
        let handle = withdraw.handle.clone();
        let (key, bound) = (self.key.clone(), self.inner.ttl);
        drop(self);
        let shown = key.clone();
        let task = handle.spawn(async move { withdraw.revoke(&key, bound).await });
        joined(&shown, task).await
    }
}

impl fmt::Debug for EtcdLockGuard {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLockGuard")
            .field("key", &self.key)
            .field("lease_id", &format_args!("{:x}", self.lease))
            .field("fence", &self.fence)
            .field("lost", &self.is_lost())
            .finish()
    }
}

/// The future returned by [`EtcdLockGuard::lost`]: resolves to how the hold was lost.
#[must_use = "futures do nothing unless you `.await` or poll them"]
pub struct EtcdLost {
    wait: Pin<Box<dyn Future<Output = LeaseCompromise> + Send>>,
}

impl Future for EtcdLost {
    type Output = LeaseCompromise;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<LeaseCompromise> {
        self.wait.as_mut().poll(cx)
    }
}

impl fmt::Debug for EtcdLost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EtcdLost").finish_non_exhaustive()
    }
}
