//! The confined worker: code that parses bytes wingold did not write (qcow2
//! tables, partition tables, NTFS through libntfs-3g, hives through libhivex)
//! runs in a forked child that restricts itself before it reads a byte. Landlock
//! (the kernel's unprivileged access control) lets it read only what the command
//! names and write nowhere but where the policy says, with no TCP; a seccomp
//! allow-list (`seccompiler`, Firecracker's, pure Rust: no libseccomp) kills it
//! on any other system call — no sockets, no exec, no ptrace, no mounts; rlimits
//! cap its memory and processor time. The parent waits: a worker killed by a
//! signal is one line, exit 1. Where the kernel lacks Landlock or seccomp the
//! worker runs anyway and says once that it is not confined.
//!
//! `landlock` (the Landlock maintainers' crate) is best effort across kernel
//! ABIs and reports what it enforced; `seccompiler` compiles a BPF filter from
//! syscall numbers without C. Both were picked for having no C dependency.

use std::path::PathBuf;

mod seccomp;

/// What a worker may touch.
#[derive(Debug, Clone, Default)]
pub struct Policy {
    /// Files, and folders with everything beneath them, it may read.
    pub read: Vec<PathBuf>,
    /// Folders it may create, write and remove files in.
    pub write: Vec<PathBuf>,
    /// Address space, bytes.
    pub memory: u64,
    /// Processor time, seconds.
    pub cpu_seconds: u64,
}

impl Policy {
    /// Reading `read`, writing nowhere, 16 GiB of address space and an hour
    /// of processor time.
    pub fn reading(read: Vec<PathBuf>) -> Policy {
        Policy {
            read,
            write: Vec::new(),
            memory: 16 << 30,
            cpu_seconds: 3600,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("the worker reading the image was killed by {signal}{why}")]
    Killed { signal: String, why: &'static str },
    #[error("could not start the worker that reads the image: {0}")]
    Start(String),
}

crate::error::classify! {
    impl Classify for Error {
        /// A worker that dies is wingold's failure (or the kernel's), not the user's.
        fn kind(&self) -> crate::error::Kind {
            crate::error::Kind::Failure
        }
    }
}

/// Runs `work` in a confined child and returns its exit code. `work` reports
/// its own errors (it returns the code to exit with); the parent only waits.
pub fn in_worker(policy: &Policy, work: impl FnOnce() -> i32) -> Result<i32, Error> {
    let answer = returning::<()>(policy, || match work() {
        0 => Ok(()),
        code => Err(code),
    })?;
    Ok(answer.err().unwrap_or(0))
}

/// Runs `work` in a confined child and hands back what it made (sent over a
/// pipe as JSON), or the exit code it chose after reporting its own error.
///
/// Meanwhile the parent passes Ctrl-C, `kill` and a closed terminal on to the
/// worker instead of dying of them: a worker writing in place holds those
/// signals until its write is whole (`interrupt`), and a parent gone would take
/// it down mid-write. A worker that ends by such a signal ends the parent by the
/// same signal, as the user asked.
pub fn returning<T: serde::Serialize + serde::de::DeserializeOwned>(
    policy: &Policy,
    work: impl FnOnce() -> Result<T, i32>,
) -> Result<Result<T, i32>, Error> {
    use nix::unistd::{fork, ForkResult};
    use std::io::{Read, Write};
    if unconfined() {
        return Ok(work());
    }
    let _ = std::io::stdout().flush();
    let _ = std::io::stderr().flush();
    let parent = nix::unistd::getpid();
    let (reader, writer) = nix::unistd::pipe().map_err(|e| Error::Start(e.to_string()))?;
    // SAFETY: the child runs only `confine` and `work`, then exits without
    // returning into the parent's code. wingold forks before it starts any
    // thread of its own (a download's thread has been joined by then), so no
    // lock is held by a thread the child lacks.
    let fork = unsafe { fork() };
    match fork.map_err(|e| Error::Start(e.to_string()))? {
        ForkResult::Child => {
            drop(reader);
            // A worker whose parent is gone (killed, say) stops too, instead of
            // reading on with no one to report to.
            let _ = nix::sys::prctl::set_pdeathsig(nix::sys::signal::Signal::SIGKILL);
            if nix::unistd::getppid() != parent {
                std::process::exit(crate::error::Kind::Failure.exit_code());
            }
            // What the kernel cannot give is said once, never a failure.
            if let Some(missing) = confine(policy) {
                crate::note::say(format!(
                    "the worker reading the image is not fully confined: {missing}"
                ));
            }
            // A panic (its one line printed by the hook) ends the worker here:
            // unwinding on into the parent's frames would run their destructors
            // in this process too — a build's lock, shared with the parent,
            // would be let go.
            let done = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                #[cfg(feature = "test-hooks")]
                test_hook();
                work()
            }));
            let code = match done.unwrap_or(Err(crate::error::Kind::Failure.exit_code())) {
                Ok(made) => {
                    let mut pipe = std::fs::File::from(writer);
                    match serde_json::to_writer(&mut pipe, &made) {
                        Ok(()) => 0,
                        Err(e) => {
                            crate::note::say(format!(
                                "the worker could not hand back its result: {e}"
                            ));
                            crate::error::Kind::Failure.exit_code()
                        }
                    }
                }
                Err(code) => code,
            };
            let _ = std::io::stdout().flush();
            let _ = std::io::stderr().flush();
            std::process::exit(code);
        }
        ForkResult::Parent { child } => {
            drop(writer);
            let forwarding = Forwarding::start(child);
            let mut sent = Vec::new();
            let read = std::fs::File::from(reader).read_to_end(&mut sent);
            let status = wait(child);
            drop(forwarding);
            match status.map_err(|e| Error::Start(e.to_string()))? {
                End::Killed(signal) => Err(killed(signal)),
                End::Exited(0) => {
                    read.map_err(|e| Error::Start(format!("reading the worker's result: {e}")))?;
                    serde_json::from_slice(&sent)
                        .map(Ok)
                        .map_err(|e| Error::Start(format!("reading the worker's result: {e}")))
                }
                End::Exited(code) => Ok(Err(code)),
            }
        }
    }
}

/// `WINGOLD_UNCONFINED=1`: the work runs in wingold's own process, unconfined
/// (for measuring what confinement costs, or for a debugger); said once.
fn unconfined() -> bool {
    static SAID: std::sync::Once = std::sync::Once::new();
    let on = std::env::var_os("WINGOLD_UNCONFINED").is_some_and(|v| !v.is_empty() && v != "0");
    if on {
        SAID.call_once(|| {
            crate::note::say("WINGOLD_UNCONFINED is set: the image is read unconfined");
        });
    }
    on
}

/// The termination signals a parent passes on to its worker.
const FORWARDED: [nix::sys::signal::Signal; 4] = {
    use nix::sys::signal::Signal;
    [
        Signal::SIGINT,
        Signal::SIGTERM,
        Signal::SIGHUP,
        Signal::SIGQUIT,
    ]
};

/// The worker the parent is waiting for (0: none).
static WORKER: std::sync::atomic::AtomicI32 = std::sync::atomic::AtomicI32::new(0);

extern "C" fn forward(sig: libc::c_int) {
    let pid = WORKER.load(std::sync::atomic::Ordering::SeqCst);
    if pid > 0 {
        // SAFETY: kill(2) is async-signal-safe.
        unsafe {
            libc::kill(pid, sig);
        }
    }
}

/// While alive, termination signals sent to the parent go to the worker
/// instead; an ignored one (nohup) stays ignored.
struct Forwarding {
    handlers: Option<crate::interrupt::Handlers>,
}

impl Forwarding {
    fn start(child: nix::unistd::Pid) -> Forwarding {
        WORKER.store(child.as_raw(), std::sync::atomic::Ordering::SeqCst);
        Forwarding {
            handlers: Some(crate::interrupt::Handlers::install(
                &FORWARDED, forward, false,
            )),
        }
    }
}

impl Drop for Forwarding {
    fn drop(&mut self) {
        // The handlers go first: a signal meanwhile still reaches the worker.
        drop(self.handlers.take());
        WORKER.store(0, std::sync::atomic::Ordering::SeqCst);
    }
}

/// How a worker ended.
enum End {
    Exited(i32),
    Killed(nix::sys::signal::Signal),
}

fn wait(child: nix::unistd::Pid) -> nix::Result<End> {
    use nix::sys::wait::{waitpid, WaitStatus};
    loop {
        match waitpid(child, None) {
            Ok(WaitStatus::Exited(_, code)) => return Ok(End::Exited(code)),
            Ok(WaitStatus::Signaled(_, signal, _)) => return Ok(End::Killed(signal)),
            Err(nix::errno::Errno::EINTR) | Ok(_) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// What a worker killed by `signal` comes to. A termination signal (passed on
/// by the parent, or sent to the worker itself) ends the parent by the same
/// signal, as the user asked; the parent's own disposition is back by then, so
/// this returns only when that signal is ignored or caught.
fn killed(signal: nix::sys::signal::Signal) -> Error {
    use nix::sys::signal::Signal;
    if FORWARDED.contains(&signal) {
        let _ = std::io::Write::flush(&mut std::io::stdout());
        let _ = nix::sys::signal::raise(signal);
    }
    let why = match signal {
        Signal::SIGSYS => {
            " (a system call outside its allow-list: a damaged or hostile image, \
             or a wingold bug)"
        }
        Signal::SIGXCPU => " (its processor-time limit)",
        Signal::SIGKILL => " (out of memory, or killed from outside)",
        Signal::SIGSEGV | Signal::SIGBUS | Signal::SIGABRT => {
            " (a crash: a damaged or hostile image, or a bug)"
        }
        _ => "",
    };
    Error::Killed {
        signal: signal.as_str().to_owned(),
        why,
    }
}

/// Restricts this process: limits, then Landlock, then seccomp (last: it
/// forbids the calls the others make). Each that cannot be had is skipped and
/// named in what this returns (None: all of it).
fn confine(policy: &Policy) -> Option<String> {
    use nix::sys::resource::{setrlimit, Resource};
    let mut missing = Vec::new();
    if let Err(e) = setrlimit(Resource::RLIMIT_AS, policy.memory, policy.memory) {
        missing.push(format!("no memory limit ({e})"));
    }
    if let Err(e) = setrlimit(
        Resource::RLIMIT_CPU,
        policy.cpu_seconds,
        policy.cpu_seconds + 5,
    ) {
        missing.push(format!("no processor limit ({e})"));
    }
    if let Err(why) = landlock(policy) {
        missing.push(why);
    }
    if let Err(why) = seccomp::apply() {
        missing.push(format!("no seccomp filter ({why})"));
    }
    (!missing.is_empty()).then(|| missing.join("; "))
}

/// The Landlock ruleset of `policy`, enforced, or why not.
fn landlock(policy: &Policy) -> Result<(), String> {
    use landlock::{
        path_beneath_rules, Access, AccessFs, AccessNet, Ruleset, RulesetAttr, RulesetCreatedAttr,
        RulesetStatus, ABI,
    };
    let abi = ABI::V5;
    // A path not there cannot be opened either way; leaving it out keeps the
    // rest of the ruleset.
    let there = |paths: &[PathBuf]| -> Vec<PathBuf> {
        paths.iter().filter(|p| p.exists()).cloned().collect()
    };
    let mut read = there(&policy.read);
    read.extend(system_reads());
    let write = there(&policy.write);
    let status = Ruleset::default()
        .handle_access(AccessFs::from_all(abi))
        .and_then(|r| r.handle_access(AccessNet::from_all(abi)))
        .and_then(|r| r.create())
        .and_then(|r| r.add_rules(path_beneath_rules(&read, AccessFs::from_read(abi))))
        .and_then(|r| r.add_rules(path_beneath_rules(&write, AccessFs::from_all(abi))))
        .and_then(|r| r.restrict_self())
        .map_err(|e| format!("no Landlock ruleset ({e})"))?;
    match status.ruleset {
        RulesetStatus::NotEnforced => Err("the kernel has no Landlock".into()),
        _ => Ok(()),
    }
}

/// What every worker reads of the system: glibc's character-set converters
/// (libhivex converts key and value names between UTF-16 and UTF-8 with iconv,
/// which loads its modules on first use). Nothing there is the user's.
fn system_reads() -> Vec<PathBuf> {
    let mut dirs: Vec<PathBuf> = ["/usr/lib/gconv", "/usr/lib64/gconv", "/lib64/gconv"]
        .iter()
        .map(PathBuf::from)
        .collect();
    // Debian's multiarch folders: /usr/lib/x86_64-linux-gnu/gconv and kin.
    if let Ok(entries) = std::fs::read_dir("/usr/lib") {
        dirs.extend(entries.flatten().map(|e| e.path().join("gconv")));
    }
    if let Some(more) = std::env::var_os("GCONV_PATH") {
        dirs.extend(std::env::split_paths(&more));
    }
    dirs.retain(|d| d.is_dir());
    dirs
}

/// Test hook (feature `test-hooks` only): `WINGOLD_TEST_WORKER=read:PATH` has
/// the confined worker try to read PATH and say on stderr what happened;
/// `WINGOLD_TEST_WORKER=connect` has it open a TCP socket (a call outside its
/// allow-list); `=sleep` has it wait a minute first; `=panic` has it panic.
#[cfg(feature = "test-hooks")]
fn test_hook() {
    let Some(what) = std::env::var_os("WINGOLD_TEST_WORKER") else {
        return;
    };
    let what = what.to_string_lossy().into_owned();
    if let Some(path) = what.strip_prefix("read:") {
        match std::fs::read(path) {
            Ok(_) => crate::note::say(format!("worker: {path}: read")),
            Err(e) => crate::note::say(format!("worker: {path}: {e}")),
        }
    } else if what == "panic" {
        panic!("a panic asked for by WINGOLD_TEST_WORKER");
    } else if what == "sleep" {
        std::thread::sleep(std::time::Duration::from_secs(60));
    } else if what == "connect" {
        let _ = std::net::TcpStream::connect("127.0.0.1:9");
        crate::note::say("worker: connect returned");
    }
}

/// The kernel's Landlock ABI version, or None without Landlock
/// (`landlock_create_ruleset` with its VERSION flag, which changes nothing).
pub fn landlock_abi() -> Option<i32> {
    const LANDLOCK_CREATE_RULESET_VERSION: libc::c_uint = 1;
    // SAFETY: with the VERSION flag the call reads no memory (attr NULL, size 0).
    let v = unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            std::ptr::null::<libc::c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    };
    (v > 0).then_some(v as i32)
}

/// What a confined worker is refused, tried live.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Proof {
    pub landlock_abi: Option<i32>,
    /// A worker allowed to read nothing opened `path`: refused (EACCES)?
    pub read_refused: bool,
    pub read: String,
    /// A worker opened a TCP socket: killed by its filter (SIGSYS)?
    pub socket_killed: bool,
    pub socket: String,
}

/// Runs two workers: one reads `path` (outside its policy), one opens a TCP
/// socket (outside its allow-list); says what happened to each.
pub fn prove(path: &std::path::Path) -> Proof {
    let nothing = Policy::reading(Vec::new());
    let (read_refused, read) = match in_worker(&nothing, || match std::fs::read(path) {
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => 0,
        Ok(_) => 3,
        Err(_) => 4,
    }) {
        Ok(0) => (true, format!("{}: refused (EACCES)", path.display())),
        Ok(3) => (false, format!("{}: read (no Landlock)", path.display())),
        Ok(_) => (false, format!("{}: failed otherwise", path.display())),
        Err(e) => (false, e.to_string()),
    };
    let (socket_killed, socket) = match in_worker(&nothing, || {
        let _ = std::net::TcpStream::connect("127.0.0.1:9");
        0
    }) {
        Err(Error::Killed { signal, .. }) if signal == "SIGSYS" => {
            (true, "killed by its filter (SIGSYS)".to_owned())
        }
        Ok(_) => (false, "the call was made (no seccomp filter)".to_owned()),
        Err(e) => (false, e.to_string()),
    };
    Proof {
        landlock_abi: landlock_abi(),
        read_refused,
        read,
        socket_killed,
        socket,
    }
}
