//! The Windows calls std does not wrap: a file's index on its volume, and whether a process
//! still runs and when it started. This is the crate's only `unsafe` code; each block is one
//! FFI call on a handle this module owns or borrows for the call, with out-pointers to local
//! values of the exact types `windows-sys` declares.

use std::fs::File;
use std::io;
use std::mem::MaybeUninit;
use std::os::windows::io::{AsRawHandle, FromRawHandle, OwnedHandle};

use windows_sys::Win32::Foundation::{
    ERROR_ACCESS_DENIED, ERROR_INVALID_PARAMETER, FILETIME, STILL_ACTIVE, WAIT_OBJECT_0,
    WAIT_TIMEOUT,
};
use windows_sys::Win32::Storage::FileSystem::{
    GetFileInformationByHandle, BY_HANDLE_FILE_INFORMATION,
};
use windows_sys::Win32::System::Threading::{
    GetExitCodeProcess, GetProcessTimes, OpenProcess, WaitForSingleObject, PROCESS_ACCESS_RIGHTS,
    PROCESS_QUERY_LIMITED_INFORMATION, PROCESS_SYNCHRONIZE,
};

/// The volume serial number and the 64-bit file index of the open `file`: what tells files
/// apart on Windows as device and inode do on Unix. Hard links to one file share it.
pub(crate) fn file_id(file: &File) -> io::Result<(u64, u64)> {
    let mut info = MaybeUninit::<BY_HANDLE_FILE_INFORMATION>::uninit();
    // SAFETY: `file` is an open handle that outlives the call, and `info` is a writable
    // `BY_HANDLE_FILE_INFORMATION`, the structure the function fills.
    let ok = unsafe { GetFileInformationByHandle(file.as_raw_handle(), info.as_mut_ptr()) };
    if ok == 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: the call succeeded, so it filled the whole structure.
    let info = unsafe { info.assume_init() };
    let index = (u64::from(info.nFileIndexHigh) << 32) | u64::from(info.nFileIndexLow);
    Ok((u64::from(info.dwVolumeSerialNumber), index))
}

/// Opens process `pid` with `access`; `Err` carries the OS error (`ERROR_INVALID_PARAMETER`
/// when no process has that id).
fn open_process(pid: u32, access: PROCESS_ACCESS_RIGHTS) -> io::Result<OwnedHandle> {
    // SAFETY: plain values in; the result is a new handle or null, checked below.
    let handle = unsafe { OpenProcess(access, 0, pid) };
    if handle.is_null() {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `handle` is a process handle just opened, owned by nobody else; `OwnedHandle`
    // closes it once.
    Ok(unsafe { OwnedHandle::from_raw_handle(handle) })
}

fn is_os_error(e: &io::Error, code: u32) -> bool {
    e.raw_os_error() == Some(code as i32)
}

/// Whether process `pid` still runs. A pid no process has is dead; a process this account
/// may not open is alive (it exists); a process object kept open by some handle after its
/// process exited is dead (its exit is what matters, not the object).
pub(crate) fn process_alive(pid: u32) -> io::Result<bool> {
    match open_process(pid, PROCESS_SYNCHRONIZE) {
        Ok(process) => {
            // SAFETY: `process` is an open process handle with SYNCHRONIZE access; a zero
            // timeout only polls its state.
            match unsafe { WaitForSingleObject(process.as_raw_handle(), 0) } {
                WAIT_TIMEOUT => Ok(true),
                WAIT_OBJECT_0 => Ok(false),
                _ => Err(io::Error::last_os_error()),
            }
        }
        Err(e) if is_os_error(&e, ERROR_INVALID_PARAMETER) => Ok(false),
        Err(e) if is_os_error(&e, ERROR_ACCESS_DENIED) => exit_code_says_alive(pid),
        Err(e) => Err(e),
    }
}

/// The exit-code test for a process that refused SYNCHRONIZE: `STILL_ACTIVE` while it runs.
/// A process that exited with code 259 reads as running, which keeps its marker (fail
/// closed); the recorded start token still tells a recycled pid apart.
fn exit_code_says_alive(pid: u32) -> io::Result<bool> {
    let process = match open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION) {
        Ok(process) => process,
        Err(e) if is_os_error(&e, ERROR_INVALID_PARAMETER) => return Ok(false),
        Err(e) if is_os_error(&e, ERROR_ACCESS_DENIED) => return Ok(true),
        Err(e) => return Err(e),
    };
    let mut code = 0u32;
    // SAFETY: `process` is an open handle with PROCESS_QUERY_LIMITED_INFORMATION access, the
    // right this call needs; `code` is a writable u32.
    if unsafe { GetExitCodeProcess(process.as_raw_handle(), &mut code) } == 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(code == STILL_ACTIVE as u32)
}

/// When process `pid` was created, in 100 ns ticks since 1601 (a `FILETIME`, as Python
/// filelock records it); `None` when it cannot be opened.
pub(crate) fn process_creation_time(pid: u32) -> Option<u64> {
    let process = open_process(pid, PROCESS_QUERY_LIMITED_INFORMATION).ok()?;
    let zero = FILETIME {
        dwLowDateTime: 0,
        dwHighDateTime: 0,
    };
    let (mut created, mut exited, mut kernel, mut user) = (zero, zero, zero, zero);
    // SAFETY: `process` is an open handle with PROCESS_QUERY_LIMITED_INFORMATION access, the
    // right this call needs; the four out-pointers are distinct writable FILETIMEs.
    let ok = unsafe {
        GetProcessTimes(
            process.as_raw_handle(),
            &mut created,
            &mut exited,
            &mut kernel,
            &mut user,
        )
    };
    (ok != 0).then(|| (u64::from(created.dwHighDateTime) << 32) | u64::from(created.dwLowDateTime))
}
