//! The fencing pattern with `EtcdLock`: the storage refuses a write whose fence is lower than
//! the highest it has accepted, so a holder that stalled past its lease (a long GC pause, a
//! frozen VM, a partition) cannot overwrite its successor's work when it resumes.
//!
//! Run with: cargo run --features etcd --example etcd_fencing
//! (It starts its own etcd from `$ETCD_BIN` or `PATH`; set `ETCD_ENDPOINT` to use a running
//! one instead.)

#[path = "../tests/common/etcd.rs"]
mod etcd_server;

use std::sync::Mutex;

use async_filelock::EtcdLock;

/// The protected resource: it remembers the highest fence it accepted.
#[derive(Default)]
struct Storage {
    state: Mutex<(u64, String)>,
}

impl Storage {
    /// Stores `value` if `fence` is not lower than any fence seen before.
    fn write(&self, fence: u64, value: &str) -> Result<(), String> {
        let mut state = self.state.lock().unwrap();
        if fence < state.0 {
            return Err(format!(
                "refused {value:?}: fence {fence} is older than {}",
                state.0
            ));
        }
        *state = (fence, value.to_owned());
        Ok(())
    }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let (_server, endpoint) = match std::env::var("ETCD_ENDPOINT") {
        Ok(endpoint) => (None, endpoint),
        Err(_) => {
            let Some(server) = etcd_server::EtcdServer::start() else {
                return Ok(());
            };
            let endpoint = server.endpoint();
            (Some(server), endpoint)
        }
    };
    let storage = Storage::default();
    let lock = EtcdLock::new(endpoint.as_str(), "fencing-demo");

    let first = lock.acquire().await?;
    storage.write(first.fence(), "written by the first holder")?;
    println!("first holder: fence {}", first.fence());

    // The first holder stalls past its lease. Here an operator revokes the lease, which is
    // what etcd does itself when the TTL passes without a keep-alive.
    let mut admin = etcd_client::Client::connect([endpoint.as_str()], None).await?;
    admin.lease_revoke(first.lease_id()).await?;
    println!("first holder told: {}", first.lost().await);

    let second = lock.acquire().await?;
    storage.write(second.fence(), "written by the second holder")?;
    println!("second holder: fence {}", second.fence());

    // The first holder resumes and, not having looked at `lost()`, writes: refused.
    let stale = storage.write(first.fence(), "a stale write");
    println!("first holder's late write: {}", stale.as_ref().unwrap_err());
    assert!(stale.is_err());
    assert_eq!(
        storage.state.lock().unwrap().1,
        "written by the second holder"
    );
    second.release().await?;
    Ok(())
}
