//! A single-node etcd server of the test's own: free ports on 127.0.0.1, a temporary data
//! directory, killed (and reaped) when dropped.
//!
//! [`EtcdServer::start`] finds the `etcd` binary in `$ETCD_BIN` or on `PATH`. Without one it
//! prints why and returns `None`, and the test returns early — unless
//! `ASYNC_FILELOCK_REQUIRE_ETCD=1` (set by `.ci/run`), which makes a missing server a failure.

#![allow(dead_code, unreachable_pub)]

use std::fs::File;
use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to answer its health check after it is started.
const READY: Duration = Duration::from_secs(30);

/// A running (or stopped) etcd server.
pub struct EtcdServer {
    bin: PathBuf,
    dir: tempfile::TempDir,
    client_port: u16,
    peer_port: u16,
    child: Option<Child>,
}

/// The etcd binary: `$ETCD_BIN`, or `etcd` on `PATH`.
pub fn etcd_binary() -> Option<PathBuf> {
    if let Some(bin) = std::env::var_os("ETCD_BIN") {
        return Some(PathBuf::from(bin));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join("etcd"))
        .find(|p| p.is_file())
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

impl EtcdServer {
    /// Starts a fresh server, or explains why there is none (see the module docs).
    pub fn start() -> Option<EtcdServer> {
        let Some(bin) = etcd_binary() else {
            let why = "no etcd binary: set ETCD_BIN or put `etcd` on PATH (scripts/setup \
                       installs Debian's etcd-server)";
            if std::env::var("ASYNC_FILELOCK_REQUIRE_ETCD").as_deref() == Ok("1") {
                panic!("ASYNC_FILELOCK_REQUIRE_ETCD=1 but {why}");
            }
            eprintln!("skipped: {why}");
            return None;
        };
        let dir = tempfile::Builder::new()
            .prefix("async-filelock-etcd-")
            .tempdir()
            .expect("a temporary directory");
        let mut server = EtcdServer {
            bin,
            dir,
            client_port: free_port(),
            peer_port: free_port(),
            child: None,
        };
        server.launch();
        Some(server)
    }

    /// The client URL.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.client_port)
    }

    /// Starts the server process (again, on the same ports and data) and waits until it is
    /// healthy.
    pub fn launch(&mut self) {
        assert!(self.child.is_none(), "the server is running");
        let peer = format!("http://127.0.0.1:{}", self.peer_port);
        let log = File::options()
            .create(true)
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .expect("the server's log file");
        let child = Command::new(&self.bin)
            .arg("--name=test")
            .arg(format!(
                "--data-dir={}",
                self.dir.path().join("data").display()
            ))
            .arg(format!("--listen-client-urls={}", self.endpoint()))
            .arg(format!("--advertise-client-urls={}", self.endpoint()))
            .arg(format!("--listen-peer-urls={peer}"))
            .arg(format!("--initial-advertise-peer-urls={peer}"))
            .arg(format!("--initial-cluster=test={peer}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("cannot run {}: {e}", self.bin.display()));
        self.child = Some(child);
        let start = Instant::now();
        while !self.healthy() {
            if let Some(status) = self
                .child
                .as_mut()
                .and_then(|c| c.try_wait().ok())
                .flatten()
            {
                panic!("etcd exited ({status}) at startup:\n{}", self.log());
            }
            assert!(
                start.elapsed() < READY,
                "etcd not healthy after {READY:?}:\n{}",
                self.log()
            );
            // Polling a starting server: a readiness probe, not a way to order steps.
            thread::sleep(Duration::from_millis(20));
        }
    }

    /// Kills the server (SIGKILL) and reaps it; its data stays for [`launch`](Self::launch).
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }

    /// A plain HTTP GET against the client port; the body, or `None` if it cannot connect.
    fn get(&self, path: &str) -> Option<String> {
        let mut s = TcpStream::connect(("127.0.0.1", self.client_port)).ok()?;
        s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
        write!(s, "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
        let mut response = String::new();
        s.read_to_string(&mut response).ok()?;
        let (_, body) = response.split_once("\r\n\r\n")?;
        Some(body.to_owned())
    }

    fn healthy(&self) -> bool {
        self.get("/health")
            .is_some_and(|body| body.contains("\"health\":\"true\""))
    }

    /// The value of a gauge or counter on the server's `/metrics` page (0 if absent).
    pub fn metric(&self, name: &str) -> f64 {
        let page = self.get("/metrics").expect("the server's metrics");
        page.lines()
            .filter(|l| !l.starts_with('#'))
            .find_map(|l| {
                let (n, v) = l.split_once(' ')?;
                (n == name).then(|| v.trim().parse().ok()).flatten()
            })
            .unwrap_or(0.0)
    }
}

impl Drop for EtcdServer {
    fn drop(&mut self) {
        self.stop();
    }
}
