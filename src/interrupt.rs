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

/// Signal handlers installed for a while: the dispositions they replaced come
/// back when this is dropped. A signal that was ignored (nohup) stays ignored.
pub struct Handlers {
    previous: Vec<(Signal, SigAction)>,
}

impl Handlers {
    /// Installs `handler` for each of `signals` (other signals blocked while it
    /// runs when `block_all`).
    pub fn install(
        signals: &[Signal],
        handler: extern "C" fn(libc::c_int),
        block_all: bool,
    ) -> Handlers {
        let mask = if block_all {
            SigSet::all()
        } else {
            SigSet::empty()
        };
        let action = SigAction::new(SigHandler::Handler(handler), SaFlags::SA_RESTART, mask);
        let previous = signals
            .iter()
            .filter_map(|&sig| {
                // SAFETY: the handlers given here (`remember`, `confine`'s
                // forwarding one) only touch atomics and make async-signal-safe
                // calls.
                let old = unsafe { signal::sigaction(sig, &action) }.ok()?;
                if old.handler() == SigHandler::SigIgn {
                    // SAFETY: puts back the disposition that was in place.
                    let _ = unsafe { signal::sigaction(sig, &old) };
                    return None;
                }
                Some((sig, old))
            })
            .collect();
        Handlers { previous }
    }
}

impl Drop for Handlers {
    fn drop(&mut self) {
        for (sig, old) in &self.previous {
            // SAFETY: puts back the disposition that was in place before.
            let _ = unsafe { signal::sigaction(*sig, old) };
        }
    }
}

/// While alive, the termination signals above are remembered instead of acted on;
/// when dropped, the dispositions come back and a remembered signal is raised again
/// (so the process ends as the user asked, just later).
pub struct Held {
    handlers: Option<Handlers>,
}

/// Holds termination signals until the returned guard is dropped.
pub fn hold() -> Held {
    PENDING.store(0, Ordering::SeqCst);
    Held {
        handlers: Some(Handlers::install(&HELD, remember, true)),
    }
}

impl Drop for Held {
    fn drop(&mut self) {
        drop(self.handlers.take());
        let pending = PENDING.swap(0, Ordering::SeqCst);
        if let Ok(sig) = Signal::try_from(pending) {
            // Acted on as it would have been (ignored, if it was ignored before).
            let _ = signal::raise(sig);
        }
    }
}
