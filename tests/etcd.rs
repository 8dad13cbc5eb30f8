//! `EtcdLock` against a real etcd server: each test starts its own single-node server
//! (`tests/common/etcd.rs`) and returns early, saying why, when no `etcd` binary is installed
//! (unless `ASYNC_FILELOCK_REQUIRE_ETCD=1`, as in CI).
//!
//! Steps are ordered by handshakes with child processes, by futures, and by reads of the
//! server's state; time limits are hang detectors, except where the time is what is tested
//! (a killed holder's successor gets in within the TTL).

#[path = "common/child.rs"]
#[macro_use]
mod child;
mod common;
#[path = "common/etcd.rs"]
mod etcd;

use std::fs;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_filelock::{CompromiseReason, ErrorKind, EtcdLock};
use etcd_client::{Client, GetOptions};

use child::{arg, read_line, say, Proc};
use common::HANG;
use etcd::EtcdServer;

/// The short TTL the tests use, so that expiry is observable quickly.
const TTL: Duration = Duration::from_secs(2);

#[test]
fn child_entry() {
    let Ok(role) = std::env::var(child::ROLE_VAR) else {
        return;
    };
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match role.as_str() {
        "etcd-count" => rt.block_on(count()),
        "etcd-hold" => rt.block_on(hold()),
        other => panic!("unknown child role {other:?}"),
    }
}

/// Role `etcd-count` (ENDPOINT, NAME, COUNTER, TIMES): increments the counter file TIMES
/// times under the lock, then prints DONE.
async fn count() {
    let lock = EtcdLock::new(arg("endpoint"), arg("name"));
    let counter = arg("counter");
    let times: usize = arg("times").parse().expect("TIMES");
    for _ in 0..times {
        let guard = lock.acquire().timeout(HANG).await.expect("acquire");
        let n: u64 = fs::read_to_string(&counter)
            .expect("read the counter")
            .trim()
            .parse()
            .expect("a number");
        // Written in place (not replaced) so that an overlapping holder loses an increment.
        fs::write(&counter, format!("{}\n", n + 1)).expect("write the counter");
        assert!(!guard.is_lost(), "the lock was lost mid-hold");
        guard.release().await.expect("release");
    }
    say("DONE");
}

/// Role `etcd-hold` (ENDPOINT, NAME): acquires with the test TTL, prints `HELD <fence>`,
/// and holds until killed.
async fn hold() {
    let lock = EtcdLock::builder(arg("endpoint"), arg("name"))
        .ttl(TTL)
        .metadata(format!("child {}", std::process::id()))
        .build()
        .expect("options");
    let guard = lock.acquire().timeout(HANG).await.expect("acquire");
    say(&format!("HELD {}", guard.fence()));
    let _ = tokio::task::spawn_blocking(read_line).await;
    drop(guard);
}

/// A multi-thread tokio runtime for the parent's side.
fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

/// The keys under `prefix`, read directly from the server.
async fn keys(endpoint: &str, prefix: &str) -> Vec<String> {
    let mut client = Client::connect([endpoint], None).await.expect("connect");
    let got = client
        .get(prefix, Some(GetOptions::new().with_prefix()))
        .await
        .expect("range read");
    got.kvs()
        .iter()
        .map(|kv| String::from_utf8_lossy(kv.key()).into_owned())
        .collect()
}

/// Waits (bounded by [`HANG`]) until the range read over `prefix` returns `n` keys, for a
/// step whose effect lands a round trip after it (a revocation spawned by `Drop`).
async fn await_keys(endpoint: &str, prefix: &str, n: usize) -> Vec<String> {
    let start = Instant::now();
    loop {
        let found = keys(endpoint, prefix).await;
        if found.len() == n {
            return found;
        }
        assert!(
            start.elapsed() < HANG,
            "expected {n} keys under {prefix:?}, still {found:?}"
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[test]
fn mutual_exclusion_across_processes() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let dir = common::tmp();
    let counter = dir.path().join("counter");
    fs::write(&counter, "0\n").unwrap();
    let (procs, times) = (4, 50);
    let endpoint = server.endpoint();
    let mut children: Vec<Proc> = (0..procs)
        .map(|_| {
            Proc::child(
                "etcd-count",
                &[
                    ("endpoint", &endpoint),
                    ("name", &"counter"),
                    ("counter", &counter),
                    ("times", &times.to_string()),
                ],
            )
        })
        .collect();
    for c in &mut children {
        c.expect("DONE");
        c.wait_success();
    }
    let total: usize = fs::read_to_string(&counter)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(total, procs * times, "increments were lost: {total}");
    let left = runtime().block_on(keys(&endpoint, "async-filelock/counter/"));
    assert!(left.is_empty(), "released holds left keys: {left:?}");
}

#[test]
fn fence_strictly_increases_across_1000_handovers() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoint = server.endpoint();
    runtime().block_on(async move {
        let lock = EtcdLock::new(endpoint.as_str(), "fence");
        // (who held, its fence, hand-overs so far)
        let log: Arc<Mutex<Vec<(usize, u64)>>> = Arc::default();
        let handovers = 1000;
        let tasks: Vec<_> = (0..2)
            .map(|who| {
                let (lock, log) = (lock.clone(), log.clone());
                tokio::spawn(async move {
                    loop {
                        let guard = lock.acquire().timeout(HANG).await.expect("acquire");
                        {
                            let mut log = log.lock().unwrap();
                            let done = log.windows(2).filter(|p| p[0].0 != p[1].0).count();
                            if done >= handovers {
                                return;
                            }
                            log.push((who, guard.fence()));
                        }
                        guard.release().await.expect("release");
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let log = log.lock().unwrap();
        let handed = log.windows(2).filter(|p| p[0].0 != p[1].0).count();
        assert_eq!(handed, handovers);
        for pair in log.windows(2) {
            assert!(
                pair[1].1 > pair[0].1,
                "fence went {:?} -> {:?}",
                pair[0],
                pair[1]
            );
        }
        // Nearly every hold went to the other task: a releaser that asks again queues behind
        // a waiter already there (it keeps the lock only when the other task had not yet
        // queued again after its own hold).
        eprintln!("{} holds, {handed} hand-overs", log.len());
        assert!(
            log.len() <= handovers + handovers / 10,
            "{} holds",
            log.len()
        );
    });
}

#[test]
fn killed_holder_is_succeeded_within_ttl() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoint = server.endpoint();
    let mut holder = Proc::child("etcd-hold", &[("endpoint", &endpoint), ("name", &"killed")]);
    let line = holder.next_line();
    let their_fence: u64 = line.strip_prefix("HELD ").expect("HELD").parse().unwrap();
    runtime().block_on(async move {
        let lock = EtcdLock::builder(endpoint.as_str(), "killed")
            .ttl(TTL)
            .build()
            .unwrap();
        let busy = lock.try_acquire().await.expect_err("the child holds it");
        assert_eq!(busy.kind(), ErrorKind::WouldBlock);
        let named = busy.holder().expect("the error names the holder");
        assert!(
            named.contains(&format!("child {}", holder.id())),
            "the holder's metadata: {busy}"
        );
        let wait = tokio::spawn(async move {
            let guard = lock.acquire().timeout(HANG).await.expect("acquire");
            (Instant::now(), guard)
        });
        // Queued behind the child before it dies.
        await_keys(&server.endpoint(), "async-filelock/killed/", 2).await;
        holder.kill();
        let killed = Instant::now();
        holder.wait();
        let (acquired, guard) = wait.await.unwrap();
        let took = acquired - killed;
        eprintln!("successor got in {took:?} after SIGKILL (TTL {TTL:?})");
        assert!(guard.fence() > their_fence);
        assert!(
            took <= TTL + Duration::from_millis(1500),
            "successor waited {took:?}, TTL {TTL:?}"
        );
        // The dead holder's lease protected its hold until it expired.
        assert!(took >= TTL / 3, "successor got in after only {took:?}");
    });
}

#[test]
fn server_restart_during_hold_reports_loss() {
    let Some(mut server) = EtcdServer::start() else {
        return;
    };
    let endpoint = server.endpoint();
    let rt = runtime();
    let calls = Arc::new(AtomicUsize::new(0));
    let seen = calls.clone();
    let lock = EtcdLock::builder(endpoint.as_str(), "restart")
        .ttl(TTL)
        .runtime(rt.handle().clone())
        .on_compromise(move |lost| {
            assert_eq!(lost.reason(), CompromiseReason::RefreshFailed);
            seen.fetch_add(1, Ordering::SeqCst);
        })
        .build()
        .unwrap();
    let guard = rt.block_on(lock.acquire().timeout(HANG)).expect("acquire");
    let fence = guard.fence();
    server.stop();
    let stopped = Instant::now();
    // Polled off the runtime: the lock's tasks run on the handle it was given.
    let lost = futures_lite::future::block_on(guard.lost());
    let took = stopped.elapsed();
    eprintln!("loss reported {took:?} after the server stopped (TTL {TTL:?}): {lost}");
    assert!(took <= TTL, "loss reported after {took:?}");
    assert_eq!(lost.reason(), CompromiseReason::RefreshFailed);
    assert_eq!(lost.fence(), fence);
    assert_eq!(lost.path().to_str(), Some(guard.key()));
    assert!(guard.is_lost());
    assert_eq!(calls.load(Ordering::SeqCst), 1);
    server.launch();
    // etcd renews leases when it restarts; the lost hold revokes its own, so the next holder
    // need not wait for the TTL either way.
    let next = rt
        .block_on(
            EtcdLock::new(endpoint.as_str(), "restart")
                .acquire()
                .timeout(HANG),
        )
        .expect("acquire after the restart");
    assert!(next.fence() > fence);
    assert!(guard.is_lost());
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the callback runs once");
    drop(guard);
    drop(next);
}

#[test]
fn cancelled_and_failed_acquisitions_leave_no_keys_and_no_watches() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoint = server.endpoint();
    let prefix = "async-filelock/cancel/";
    runtime().block_on(async {
        let lock = EtcdLock::builder(endpoint.as_str(), "cancel")
            .metadata("the holder")
            .build()
            .unwrap();
        let guard = lock.acquire().await.expect("acquire");
        // The holder watches its own key (from a task, which may take a moment to start).
        let baseline = 1.0;
        let start = Instant::now();
        while server.metric("etcd_debugging_mvcc_watcher_total") < baseline {
            assert!(start.elapsed() < HANG, "the holder never watched its key");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }

        // Single attempts and timeouts withdraw before they return, and name the holder.
        let busy = lock.try_acquire().await.expect_err("held");
        assert_eq!(busy.kind(), ErrorKind::WouldBlock);
        assert_eq!(busy.path().and_then(|p| p.to_str()), Some(prefix));
        assert!(busy.to_string().contains("the holder"), "{busy}");
        assert!(
            busy.to_string()
                .contains(&format!("{:x}", guard.lease_id())),
            "{busy}"
        );
        assert_eq!(keys(&endpoint, prefix).await, [guard.key()]);
        let late = lock
            .acquire()
            .timeout(Duration::from_millis(200))
            .await
            .expect_err("held");
        assert_eq!(late.kind(), ErrorKind::Timeout);
        assert!(late.to_string().contains("the holder"), "{late}");
        assert_eq!(keys(&endpoint, prefix).await, [guard.key()]);

        // Waiters queued and watching, then dropped.
        let waiters: Vec<_> = (0..10)
            .map(|_| tokio::spawn(lock.acquire().timeout(HANG)))
            .collect();
        await_keys(&endpoint, prefix, 11).await;
        let start = Instant::now();
        while server.metric("etcd_debugging_mvcc_watcher_total") < 11.0 {
            assert!(start.elapsed() < HANG, "the waiters never watched");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        for w in &waiters {
            w.abort();
        }
        for w in waiters {
            assert!(w.await.unwrap_err().is_cancelled());
        }
        // Acquisitions dropped right after their first poll, mid-grant or mid-put.
        for _ in 0..20 {
            let mut fut = Box::pin(lock.acquire());
            assert!(futures_lite::future::poll_once(&mut fut).await.is_none());
            tokio::task::yield_now().await;
            drop(fut);
        }
        assert_eq!(await_keys(&endpoint, prefix, 1).await, [guard.key()]);
        let start = Instant::now();
        while server.metric("etcd_debugging_mvcc_watcher_total") > baseline {
            assert!(start.elapsed() < HANG, "dropped waiters left watches");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        guard.release().await.expect("release");
        assert!(keys(&endpoint, prefix).await.is_empty());
        // The next acquisition is immediate: nothing dropped above is still queued.
        let next = lock.try_acquire().await.expect("free");
        drop(next);
        await_keys(&endpoint, prefix, 0).await;
    });
}

#[test]
fn hundred_waiters_hand_over_in_create_revision_order() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoint = server.endpoint();
    let prefix = "async-filelock/hundred/";
    runtime().block_on(async {
        let lock = EtcdLock::new(endpoint.as_str(), "hundred");
        let first = lock.acquire().await.expect("acquire");
        let order: Arc<Mutex<Vec<u64>>> = Arc::default();
        let waiters: Vec<_> = (0..100)
            .map(|_| {
                let (lock, order) = (lock.clone(), order.clone());
                tokio::spawn(async move {
                    let guard = lock.acquire().timeout(HANG).await.expect("acquire");
                    order.lock().unwrap().push(guard.fence());
                    guard.release().await.expect("release");
                })
            })
            .collect();
        await_keys(&endpoint, prefix, 101).await;
        // Each waiter watches one key, its predecessor: 100 watches, plus the holder's own.
        let start = Instant::now();
        while server.metric("etcd_debugging_mvcc_watcher_total") < 101.0 {
            assert!(start.elapsed() < HANG, "the waiters never watched");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        let fence = first.fence();
        first.release().await.expect("release");
        for w in waiters {
            w.await.unwrap();
        }
        let order = order.lock().unwrap().clone();
        assert_eq!(order.len(), 100);
        assert!(order[0] > fence);
        for pair in order.windows(2) {
            assert!(pair[1] > pair[0], "handed over out of order: {order:?}");
        }
        assert!(keys(&endpoint, prefix).await.is_empty());
    });
}

#[test]
fn a_waiter_keeps_its_place_past_the_ttl() {
    let Some(server) = EtcdServer::start() else {
        return;
    };
    let endpoint = server.endpoint();
    runtime().block_on(async {
        let lock = EtcdLock::builder(endpoint.as_str(), "patient")
            .ttl(TTL)
            .build()
            .unwrap();
        let guard = lock.acquire().await.expect("acquire");
        let waiter = tokio::spawn(lock.acquire().timeout(HANG));
        await_keys(&endpoint, "async-filelock/patient/", 2).await;
        // Both leases must be kept alive for this long: the holder's and the waiter's.
        tokio::time::sleep(TTL * 2).await;
        assert!(!guard.is_lost());
        assert_eq!(keys(&endpoint, "async-filelock/patient/").await.len(), 2);
        let fence = guard.fence();
        drop(guard);
        let next = waiter.await.unwrap().expect("acquire");
        assert!(next.fence() > fence);
    });
}
