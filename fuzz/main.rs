//! `wingold-fuzz TARGET [FILE…]`: runs one fuzz target (`targets.rs`).
//! `wingold-fuzz --frame OUT FILE…`: writes the files as one framed input
//! (the replay target's hive and logs), for scripts/fuzz.sh's seeds.
//!
//! Built with `--cfg afl` and AFL++'s runtime (scripts/fuzz.sh), it runs under
//! `afl-fuzz` in persistent mode: one process tries thousands of inputs, each
//! read afresh from standard input. Built plainly, it runs the target once on
//! each FILE (or on standard input): how a crash is replayed by hand.

mod targets;

fn main() {
    let mut args = std::env::args().skip(1);
    let Some(name) = args.next() else {
        eprintln!("usage: wingold-fuzz TARGET [FILE…]; targets:");
        for (n, _) in targets::TARGETS {
            eprintln!("  {n}");
        }
        std::process::exit(2);
    };
    if name == "--frame" {
        let out = args.next().expect("--frame OUT FILE…");
        let parts: Vec<Vec<u8>> = args
            .map(|f| std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}")))
            .collect();
        let parts: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        std::fs::write(&out, targets::frame(&parts)).unwrap_or_else(|e| panic!("{out}: {e}"));
        return;
    }
    let Some(target) = targets::target(&name) else {
        eprintln!("wingold-fuzz: no target {name}");
        std::process::exit(2);
    };
    // A panic is a finding: abort, which the fuzzer sees as a crash (an unwind
    // would be an ordinary exit). Those wingold catches on purpose (qcow2-rs
    // asserting on a damaged image becomes an error) unwind as they would.
    std::panic::set_hook(Box::new(|info| {
        if wingold::image::panic_is_guarded() {
            return;
        }
        eprintln!("{info}");
        std::process::abort();
    }));
    #[cfg(afl)]
    afl::run(target);
    #[cfg(not(afl))]
    {
        let files: Vec<String> = args.collect();
        if files.is_empty() {
            use std::io::Read;
            let mut data = Vec::new();
            std::io::stdin()
                .read_to_end(&mut data)
                .expect("standard input");
            target(&data);
        }
        for f in files {
            let data = std::fs::read(&f).unwrap_or_else(|e| panic!("{f}: {e}"));
            target(&data);
        }
    }
}

/// The persistent loop of AFL++'s runtime (`afl-compiler-rt.o`, linked in by
/// scripts/fuzz.sh).
#[cfg(afl)]
mod afl {
    use std::io::Read;

    extern "C" {
        fn __afl_persistent_loop(max: u32) -> i32;
    }

    /// afl-fuzz looks for this text in the binary to run it in persistent mode.
    static PERSISTENT: &[u8] = b"##SIG_AFL_PERSISTENT##\0";

    pub fn run(target: super::targets::Target) {
        // Read once so that the linker keeps the marker.
        let _ = unsafe { std::ptr::read_volatile(&PERSISTENT) };
        let mut data = Vec::new();
        // SAFETY: the runtime's loop only counts and signals its fork server.
        while unsafe { __afl_persistent_loop(10_000) } != 0 {
            data.clear();
            // afl-fuzz rewrites the input file behind standard input and seeks
            // it back to 0 before each run; unbuffered reads see each input whole.
            let mut stdin = std::io::stdin().lock();
            if stdin.read_to_end(&mut data).is_ok() {
                target(&data);
            }
        }
    }
}
