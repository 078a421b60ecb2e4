//! Ctrl-C, `kill` and a closed terminal held off while the user's own file is
//! being changed in place: such a change cannot be undone half-way (an NTFS volume
//! keeps two copies of its first MFT records, written one after the other), so a
//! termination signal that arrives meanwhile is remembered and acted on once the
//! change is whole. SIGKILL cannot be held; what it leaves is marked dirty instead.

use nix::sys::signal::{self, SaFlags, SigAction, SigHandler, SigSet, Signal};
use std::sync::atomic::{AtomicI32, Ordering};

const HELD: [Signal; 4] = [
    Signal::SIGINT,
    Signal::SIGTERM,
    Signal::SIGHUP,
    Signal::SIGQUIT,
];

/// The first held signal that arrived, or 0.
static PENDING: AtomicI32 = AtomicI32::new(0);

const NOTICE: &[u8] = b"wingold: interrupted; finishing the write in place first, so that \
the image is left whole\n";

extern "C" fn remember(sig: libc::c_int) {
    if PENDING
        .compare_exchange(0, sig, Ordering::SeqCst, Ordering::SeqCst)
        .is_ok()
    {
        // SAFETY: write(2) is async-signal-safe; NOTICE is a static buffer.
        unsafe {
            libc::write(2, NOTICE.as_ptr().cast(), NOTICE.len());
        }
    }
}

/// While alive, the termination signals above are remembered instead of acted on;
/// when dropped, the dispositions come back and a remembered signal is raised again
/// (so the process ends as the user asked, just later).
pub struct Held {
    previous: Vec<(Signal, SigAction)>,
}

/// Holds termination signals until the returned guard is dropped.
pub fn hold() -> Held {
    PENDING.store(0, Ordering::SeqCst);
    let action = SigAction::new(
        SigHandler::Handler(remember),
        SaFlags::SA_RESTART,
        SigSet::all(),
    );
    let previous = HELD
        .iter()
        .filter_map(|&sig| {
            // SAFETY: `remember` only touches an atomic and calls write(2), both
            // async-signal-safe.
            let old = unsafe { signal::sigaction(sig, &action) }.ok()?;
            if old.handler() == SigHandler::SigIgn {
                // Ignored before (nohup): stays ignored.
                // SAFETY: puts back the disposition that was in place.
                let _ = unsafe { signal::sigaction(sig, &old) };
                return None;
            }
            Some((sig, old))
        })
        .collect();
    Held { previous }
}

impl Drop for Held {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: puts back the disposition that was in place before `hold`.
            let _ = unsafe { signal::sigaction(*sig, old) };
        }
        let pending = PENDING.swap(0, Ordering::SeqCst);
        if let Ok(sig) = Signal::try_from(pending) {
            // Acted on as it would have been (ignored, if it was ignored before).
            let _ = signal::raise(sig);
        }
    }
}
