//! Logging: libntfs-3g's messages are kept per thread and added to our errors.

use crate::ntfs::sys;
use std::cell::RefCell;
use std::ffi::c_char;
use std::ffi::c_int;
use std::ffi::c_uint;
use std::ffi::CStr;
use std::panic::catch_unwind;
use std::sync::Once;
thread_local! {
    static LOG: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}
const LOG_KEEP: usize = 12;

/// Called by log_shim.c with one formatted message.
#[no_mangle]
extern "C" fn wingold_ntfs_log(_level: c_uint, function: *const c_char, text: *const c_char) {
    let _ = catch_unwind(|| {
        // SAFETY: the shim passes two NUL-terminated strings that live for this call.
        let (function, text) = unsafe { (CStr::from_ptr(function), CStr::from_ptr(text)) };
        let line = format!(
            "{}: {}",
            function.to_string_lossy(),
            text.to_string_lossy().trim()
        );
        if std::env::var_os("WINGOLD_NTFS_DEBUG").is_some() {
            eprintln!("libntfs-3g: {line}");
        }
        LOG.with(|log| {
            let mut log = log.borrow_mut();
            if log.len() == LOG_KEEP {
                log.remove(0);
            }
            log.push(line);
        });
    });
}

/// Takes what libntfs-3g said since the last call, as one line.
pub(super) fn take_log() -> String {
    LOG.with(|log| log.borrow_mut().drain(..).collect::<Vec<_>>().join("; "))
}

pub(super) fn install_log_handler() {
    static ONCE: Once = Once::new();
    // SAFETY: the shim only registers a static handler with libntfs-3g.
    ONCE.call_once(|| unsafe { sys::wingold_ntfs_install_log_handler() });
}

pub(super) fn set_errno(code: c_int) {
    // SAFETY: errno is thread-local; writing it is what C callers expect of us.
    unsafe { *libc::__errno_location() = code };
}

pub(super) fn errno() -> std::io::Error {
    std::io::Error::last_os_error()
}
