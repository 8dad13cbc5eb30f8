//! The async API under tokio: tasks contending for one lock, a guard moved into a spawned
//! task, and an aborted waiter.
//!
//! Run with: cargo run --example tokio
//!
//! async-filelock has no tokio feature and needs none: `lock.acquire()` is a plain future, and
//! its timers come from async-io, which runs beside tokio's own driver. A waiting task never
//! blocks a runtime thread.

use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_filelock::{ErrorKind, FileLock};
use tokio::sync::oneshot;
use tokio::time::sleep;

#[tokio::main]
async fn main() -> Result<(), Box<dyn Error>> {
    let dir = tempfile::tempdir()?;
    // `FileLock` is cheap to clone and `Send + Sync`: every task gets a clone.
    let lock = FileLock::new(dir.path().join("tokio-example.lock"));

    contending_tasks(&lock).await?;
    guard_moved_into_a_task(&lock).await?;
    aborted_waiter(&lock).await?;
    Ok(())
}

/// Four tasks, two turns each. The lock lets one in at a time, in the order they asked.
async fn contending_tasks(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== 4 tasks contending");
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for id in 1..=4 {
        let lock = lock.clone();
        let inside = inside.clone();
        tasks.push(tokio::spawn(async move {
            for turn in 1..=2 {
                let guard = lock.acquire().await?;
                let others = inside.fetch_add(1, Ordering::SeqCst);
                assert_eq!(others, 0, "two tasks held the lock at once");
                println!("task {id} holds the lock (turn {turn})");
                sleep(Duration::from_millis(10)).await; // work under the lock
                inside.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
            }
            Ok::<(), async_filelock::Error>(())
        }));
    }
    for task in tasks {
        task.await??;
    }
    println!("all tasks done, never two inside at once");
    Ok(())
}

/// The guard is `'static + Send`: it can be handed to another task, which releases it.
async fn guard_moved_into_a_task(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== a guard moved into tokio::spawn");
    let guard = lock.acquire().await?;
    let (started, is_started) = oneshot::channel();
    let background = tokio::spawn(async move {
        println!("background task: holding the lock main acquired");
        let _ = started.send(());
        sleep(Duration::from_millis(50)).await;
        println!("background task: done, dropping the guard");
        drop(guard);
    });
    is_started.await?;

    // The lock is held (by the background task), so a single attempt fails at once.
    let err = lock.try_acquire().unwrap_err();
    assert_eq!(err.kind(), ErrorKind::WouldBlock);
    println!("main: try_acquire: {err}");

    let asked = Instant::now();
    let guard = lock.acquire().await?;
    println!(
        "main: acquired it back {} ms later, as soon as the task released it",
        asked.elapsed().as_millis()
    );
    background.await?;
    guard.release()?;
    Ok(())
}

/// Aborting a task that waits for the lock leaves nothing behind.
async fn aborted_waiter(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== aborting a waiting task");
    let guard = lock.acquire().await?;
    let waiter = {
        let lock = lock.clone();
        tokio::spawn(async move {
            let _guard = lock.acquire().await;
            unreachable!("the lock is held until this task is aborted");
        })
    };
    sleep(Duration::from_millis(20)).await; // let it start waiting
    waiter.abort();
    assert!(waiter.await.unwrap_err().is_cancelled());
    println!("waiting task aborted");

    drop(guard);
    // The aborted waiter holds no place in the queue and took nothing: the lock is free.
    let guard = lock.try_acquire()?;
    println!("try_acquire after the abort: ok, the lock is free");
    guard.release()?;
    Ok(())
}
