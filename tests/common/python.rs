//! Python's `filelock` package, for interop tests.

use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Makes sure `python3` can import `filelock`, installing it with pip once per test binary.
///
/// With `ASYNC_FILELOCK_REQUIRE_PYTHON` set to a version number, that exact version must be
/// the one imported (CI runs the interop tests once per verified version, picking it with
/// `PYTHONPATH`); `any` accepts whatever is installed.
pub fn ensure_filelock() {
    static READY: OnceLock<Result<String, String>> = OnceLock::new();
    let ready = READY.get_or_init(|| {
        let import = || {
            Command::new("python3")
                .args(["-c", "import filelock; print(filelock.__version__)"])
                .output()
        };
        match import() {
            Err(e) => {
                return Err(format!(
                    "python3 cannot be run ({e}): the interop tests need python3 with the \
                     filelock package (scripts/setup installs it)"
                ))
            }
            Ok(out) if out.status.success() => {
                return Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
            }
            Ok(_) => {}
        }
        let pip = |extra: &[&str]| {
            Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(extra)
                .arg("filelock")
                .stdin(Stdio::null())
                .output()
        };
        let mut out = pip(&[]).map_err(|e| format!("python3 -m pip: {e}"))?;
        if !out.status.success() {
            // A Debian python3 refuses a plain install (PEP 668).
            out = pip(&["--break-system-packages"]).map_err(|e| format!("python3 -m pip: {e}"))?;
        }
        match import() {
            Ok(imported) if imported.status.success() => {
                Ok(String::from_utf8_lossy(&imported.stdout).trim().to_string())
            }
            _ => Err(format!(
                "python3 -m pip install filelock failed ({}): {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            )),
        }
    });
    match ready {
        Err(e) => panic!("{e}"),
        Ok(have) => match std::env::var("ASYNC_FILELOCK_REQUIRE_PYTHON") {
            Ok(want) if want != "any" && want != *have => {
                panic!("ASYNC_FILELOCK_REQUIRE_PYTHON={want} but python3 imports filelock {have}")
            }
            _ => {}
        },
    }
}
