//! The async API under smol: tasks contending for one lock, a guard moved into a spawned
//! task, and shared (reader) holds.
//!
//! Run with: cargo run --example smol
//!
//! The very same futures run under tokio (see `examples/tokio.rs`); nothing in
//! async-filelock is specific to either runtime.

use std::error::Error;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use async_filelock::{ErrorKind, FileLock};
use smol::Timer;

fn main() -> Result<(), Box<dyn Error>> {
    smol::block_on(async {
        let dir = tempfile::tempdir()?;
        // `FileLock` is cheap to clone and `Send + Sync`: every task gets a clone.
        let lock = FileLock::new(dir.path().join("smol-example.lock"));

        contending_tasks(&lock).await?;
        guard_moved_into_a_task(&lock).await?;
        readers_then_writer(&lock).await?;
        Ok(())
    })
}

/// Four tasks, two turns each. The lock lets one in at a time, in the order they asked.
async fn contending_tasks(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== 4 tasks contending");
    let inside = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for id in 1..=4 {
        let lock = lock.clone();
        let inside = inside.clone();
        tasks.push(smol::spawn(async move {
            for turn in 1..=2 {
                let guard = lock.acquire().await?;
                let others = inside.fetch_add(1, Ordering::SeqCst);
                assert_eq!(others, 0, "two tasks held the lock at once");
                println!("task {id} holds the lock (turn {turn})");
                Timer::after(Duration::from_millis(10)).await; // work under the lock
                inside.fetch_sub(1, Ordering::SeqCst);
                drop(guard);
            }
            Ok::<(), async_filelock::Error>(())
        }));
    }
    for task in tasks {
        task.await?;
    }
    println!("all tasks done, never two inside at once");
    Ok(())
}

/// The guard is `'static + Send`: it can be handed to another task, which releases it.
async fn guard_moved_into_a_task(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== a guard moved into smol::spawn");
    let guard = lock.acquire().await?;
    let (started, is_started) = smol::channel::bounded(1);
    let background = smol::spawn(async move {
        println!("background task: holding the lock main acquired");
        let _ = started.send(()).await;
        Timer::after(Duration::from_millis(50)).await;
        println!("background task: done, dropping the guard");
        drop(guard);
    });
    is_started.recv().await?;

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
    background.await;
    guard.release()?;
    Ok(())
}

/// Shared holds coexist; an exclusive request waits until the last one is gone.
async fn readers_then_writer(lock: &FileLock) -> Result<(), Box<dyn Error>> {
    println!("== shared readers, then a writer");
    let mut readers = Vec::new();
    for _ in 0..3 {
        readers.push(lock.acquire_shared().await?);
    }
    println!("{} shared guards held at once", readers.len());

    let writer = {
        let lock = lock.clone();
        smol::spawn(async move { lock.acquire().await })
    };
    Timer::after(Duration::from_millis(20)).await;
    assert!(!writer.is_finished());
    println!("writer waiting while readers hold the lock");

    while let Some(reader) = readers.pop() {
        reader.release()?;
        println!("reader released, {} left", readers.len());
    }
    let guard = writer.await?;
    println!("writer holds the lock, shared = {}", guard.is_shared());
    Ok(())
}
