//! Giving up on an acquisition: race it against a timer or a shutdown signal, or give it a
//! time limit. A dropped `acquire()` future leaves nothing behind.
//!
//! Run with: cargo run --example select
//!
//! `lock.acquire()` is cancel safe: dropping the future at any point (the losing branch of
//! `select!`, `future::or`, `tokio::time::timeout`, an aborted task) leaves no lock held, no
//! file open and no place in the in-process queue, and nothing acquires the lock later on its
//! behalf.

use std::error::Error;
use std::time::{Duration, Instant};

use async_filelock::{ErrorKind, FileLock};
use async_io::Timer;
use futures_lite::future;

fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    let lock = FileLock::new(dir.path().join("select-example.lock"));

    future::block_on(race_against_a_timer(&lock))?;
    future::block_on(cancelled_waiter_ahead_in_the_queue(&lock))?;
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()?
        .block_on(tokio_select_with_shutdown(&lock))?;
    future::block_on(time_limit(&lock))?;
    Ok(())
}

/// `futures_lite::future::or`: whichever finishes first wins, the other is dropped.
async fn race_against_a_timer(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== acquire() vs a 100 ms timer, with future::or");
    let held = lock.acquire().await?;

    let started = Instant::now();
    let outcome = future::or(async { Some(lock.acquire().await) }, async {
        Timer::after(Duration::from_millis(100)).await;
        None
    })
    .await;
    assert!(outcome.is_none());
    println!(
        "the timer won after {} ms; the acquire() future was dropped while waiting",
        started.elapsed().as_millis()
    );

    held.release()?;
    // Had the dropped future kept its place in the queue, this single attempt would fail.
    let guard = lock.try_acquire()?;
    println!("after the holder released it, try_acquire succeeds at once");
    guard.release()?;
    Ok(())
}

/// A waiter dropped while at the head of the queue does not hold up the one behind it.
async fn cancelled_waiter_ahead_in_the_queue(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== a cancelled waiter ahead in the queue");
    let held = lock.acquire().await?;

    let mut first = lock.acquire();
    let mut second = lock.acquire();
    // Poll each once: both are now queued behind `held`, `first` ahead of `second`.
    assert!(future::poll_once(&mut first).await.is_none());
    assert!(future::poll_once(&mut second).await.is_none());
    drop(first);
    println!("two waiters queued; the first one dropped");

    held.release()?;
    let released = Instant::now();
    let guard = second.await?;
    println!(
        "the second waiter got the lock {} µs after the release",
        released.elapsed().as_micros()
    );
    guard.release()?;
    Ok(())
}

/// `tokio::select!`: stop waiting when the program is asked to shut down.
async fn tokio_select_with_shutdown(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== acquire() vs a shutdown signal, with tokio::select!");
    let held = lock.acquire().await?;

    let (shutdown, mut shutdown_requested) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let _ = shutdown.send(());
    });

    tokio::select! {
        guard = lock.acquire() => {
            unreachable!("the lock is held for the whole race, got {guard:?}");
        }
        _ = &mut shutdown_requested => {
            println!("shutdown requested while waiting: the acquire() branch was cancelled");
        }
    }

    held.release()?;
    let guard = lock.acquire().await?;
    println!("acquire() afterwards succeeds at once");
    guard.release()?;
    Ok(())
}

/// `.timeout(..)` on the future: a `Timeout` error that names the path and the time waited.
async fn time_limit(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== acquire().timeout(200 ms) while the lock is held");
    let held = lock.acquire().await?;

    let err = lock
        .acquire()
        .timeout(Duration::from_millis(200))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Timeout);
    println!("error: {err}");
    println!("err.waited() = {:?}", err.waited());

    held.release()?;
    let guard = lock.acquire().timeout(Duration::from_millis(200)).await?;
    println!("after the release, the same call succeeds at once");
    guard.release()?;
    Ok(())
}
