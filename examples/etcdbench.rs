//! `EtcdLock` latency against a local single-node etcd, next to a raw etcd loop written with
//! the same client (the floor), in the same run.
//!
//! Run with `scripts/etcdbench.sh` (a release build of
//! `cargo run --release --features etcd --example etcdbench -- [--quick] [--endpoint URL]`).
//! Without `--endpoint` it starts its own `etcd` (from `$ETCD_BIN` or `PATH`) on free ports
//! with a temporary data directory, and stops it at the end.
//!
//! - **uncontended**: acquire + release of a lock nobody else wants, per operation. Library:
//!   `lock.acquire().await` then `guard.release().await`. Floor: `lease_grant` + a
//!   transaction that puts the key with the lease if it is absent + `lease_revoke`, the
//!   fewest requests a lease lock can make.
//! - **hand-over**: a holder releases while a waiter (its own client connection) is queued
//!   and watching; latency = the waiter's acquire instant minus the holder's instant just
//!   before its release. Library: `guard.release().await` → the waiter's `acquire()`
//!   resolves. Floor: the holder revokes its lease; the waiter, watching the holder's key,
//!   sees the deletion and puts its own key in a transaction that checks it is absent.
//!
//! Variants alternate round by round, so the drift of a busy machine hits both alike.

#[path = "../tests/common/etcd.rs"]
mod etcd_server;

use std::time::{Duration, Instant};

use async_filelock::EtcdLock;
use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};

const TTL: i64 = 10;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let quick = args.iter().any(|a| a == "--quick");
    let given = args
        .iter()
        .position(|a| a == "--endpoint")
        .map(|i| args.get(i + 1).expect("--endpoint URL").clone());
    let (server, endpoint) = match given {
        Some(e) => (None, e),
        None => {
            let server = etcd_server::EtcdServer::start().expect("an etcd binary");
            let endpoint = server.endpoint();
            (Some(server), endpoint)
        }
    };
    let (rounds, per_round) = if quick { (5, 40) } else { (10, 100) };
    println!(
        "etcdbench: {endpoint} ({}), {rounds} rounds x {per_round} operations per variant",
        if server.is_some() {
            "single-node etcd started by this run"
        } else {
            "given endpoint"
        }
    );

    let a = Client::connect([endpoint.as_str()], None).await.unwrap();
    let b = Client::connect([endpoint.as_str()], None).await.unwrap();
    let lock_a = EtcdLock::new(a.clone(), "bench");
    let lock_b = EtcdLock::new(b.clone(), "bench");
    // Warm both paths up.
    for _ in 0..20 {
        lock_a.acquire().await.unwrap().release().await.unwrap();
        raw_acquire_release(&mut a.clone(), "raw/bench").await;
    }

    let mut lib_un = Vec::new();
    let mut raw_un = Vec::new();
    let mut lib_ho = Vec::new();
    let mut raw_ho = Vec::new();
    for _ in 0..rounds {
        for _ in 0..per_round {
            let t = Instant::now();
            let guard = lock_a.acquire().await.unwrap();
            guard.release().await.unwrap();
            lib_un.push(t.elapsed());
        }
        let mut client = a.clone();
        for _ in 0..per_round {
            let t = Instant::now();
            raw_acquire_release(&mut client, "raw/bench").await;
            raw_un.push(t.elapsed());
        }
        for _ in 0..per_round / 4 {
            lib_ho.push(lib_handover(&lock_a, &lock_b, &endpoint).await);
        }
        for _ in 0..per_round / 4 {
            raw_ho.push(raw_handover(&a, &b).await);
        }
    }
    println!();
    println!("| operation | variant | p50 | p99 | mean |");
    println!("|---|---|---|---|---|");
    row(
        "uncontended acquire + release",
        "raw lease + txn + revoke (floor)",
        &mut raw_un,
    );
    row("uncontended acquire + release", "EtcdLock", &mut lib_un);
    row(
        "hand-over (release → waiter holds)",
        "raw revoke → watch → txn (floor)",
        &mut raw_ho,
    );
    row(
        "hand-over (release → waiter holds)",
        "EtcdLock",
        &mut lib_ho,
    );
    drop(server);
}

fn row(op: &str, variant: &str, samples: &mut [Duration]) {
    samples.sort();
    let p = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    let mean = samples.iter().sum::<Duration>() / samples.len() as u32;
    println!(
        "| {op} | {variant} | {:.2} ms | {:.2} ms | {:.2} ms |",
        ms(p(0.5)),
        ms(p(0.99)),
        ms(mean)
    );
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

/// The floor's lock: a lease, a put-if-absent under it; `None` if the key is taken.
async fn raw_acquire(client: &mut Client, key: &str) -> Option<i64> {
    let lease = client.lease_grant(TTL, None).await.unwrap().id();
    let txn = Txn::new()
        .when([Compare::create_revision(key, CompareOp::Equal, 0)])
        .and_then([TxnOp::put(
            key,
            "raw",
            Some(PutOptions::new().with_lease(lease)),
        )]);
    if client.txn(txn).await.unwrap().succeeded() {
        Some(lease)
    } else {
        client.lease_revoke(lease).await.unwrap();
        None
    }
}

async fn raw_acquire_release(client: &mut Client, key: &str) {
    let lease = raw_acquire(client, key).await.expect("uncontended");
    client.lease_revoke(lease).await.unwrap();
}

/// One library hand-over: `a` holds, `b` queues behind it, `a` releases.
async fn lib_handover(a: &EtcdLock, b: &EtcdLock, endpoint: &str) -> Duration {
    let guard = a.acquire().await.unwrap();
    let waiter = {
        let b = b.clone();
        tokio::spawn(async move {
            let guard = b.acquire().await.unwrap();
            (Instant::now(), guard)
        })
    };
    // Until the waiter is queued and watching (outside the measurement).
    wait_keys(endpoint, &a.key_prefix(), 2).await;
    tokio::time::sleep(Duration::from_millis(5)).await;
    let released = Instant::now();
    guard.release().await.unwrap();
    let (acquired, guard) = waiter.await.unwrap();
    guard.release().await.unwrap();
    acquired - released
}

/// One floor hand-over: `a` holds the key, `b` watches it, `a` revokes, `b` puts.
async fn raw_handover(a: &Client, b: &Client) -> Duration {
    let key = "raw/handover";
    let mut a = a.clone();
    let lease = raw_acquire(&mut a, key).await.expect("free");
    let rev = a.get(key, None).await.unwrap().header().unwrap().revision();
    let mut b = b.clone();
    let mut watch = b
        .watch(key, Some(WatchOptions::new().with_start_revision(rev + 1)))
        .await
        .unwrap();
    // The watch's "created" response: the waiter is watching.
    let created = watch.message().await.unwrap().unwrap();
    assert!(created.created());
    tokio::time::sleep(Duration::from_millis(5)).await;
    let released = Instant::now();
    a.lease_revoke(lease).await.unwrap();
    'deleted: loop {
        let m = watch.message().await.unwrap().unwrap();
        if m.events()
            .iter()
            .any(|e| e.event_type() == EventType::Delete)
        {
            break 'deleted;
        }
    }
    let lease_b = raw_acquire(&mut b, key)
        .await
        .expect("free after the revoke");
    let acquired = Instant::now();
    drop(watch);
    b.lease_revoke(lease_b).await.unwrap();
    acquired - released
}

async fn wait_keys(endpoint: &str, prefix: &str, n: usize) {
    let mut c = Client::connect([endpoint], None).await.unwrap();
    let start = Instant::now();
    loop {
        let got = c
            .get(
                prefix,
                Some(
                    etcd_client::GetOptions::new()
                        .with_prefix()
                        .with_count_only(),
                ),
            )
            .await
            .unwrap();
        if got.count() as usize == n {
            return;
        }
        assert!(
            start.elapsed() < Duration::from_secs(30),
            "the waiter never queued"
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}
