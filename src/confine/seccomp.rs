//! The worker's system-call allow-list: files it already may open (Landlock
//! decides which), memory, threads, time, signals; nothing that reaches the
//! network, starts programs, traces or mounts. Any other call kills the process
//! (SIGSYS), which the parent reports.

use seccompiler::{BpfProgram, SeccompAction, SeccompFilter, SeccompRule, TargetArch};
use std::collections::BTreeMap;

/// Calls the worker may make. Gathered with `strace -f -c` over the test suite's
/// inspect runs, plus the calls the same code makes on other paths (threads,
/// `mremap` for growing buffers, `ioctl` for terminals, `madvise`).
const ALLOWED: &[i64] = &[
    // Files.
    libc::SYS_read,
    libc::SYS_write,
    libc::SYS_pread64,
    libc::SYS_pwrite64,
    libc::SYS_readv,
    libc::SYS_writev,
    libc::SYS_preadv,
    libc::SYS_pwritev,
    libc::SYS_preadv2,
    libc::SYS_pwritev2,
    libc::SYS_openat,
    libc::SYS_close,
    libc::SYS_lseek,
    libc::SYS_newfstatat,
    libc::SYS_fstat,
    libc::SYS_statx,
    libc::SYS_fcntl,
    libc::SYS_ioctl,
    libc::SYS_getdents64,
    libc::SYS_readlinkat,
    libc::SYS_faccessat,
    libc::SYS_faccessat2,
    libc::SYS_getcwd,
    libc::SYS_fsync,
    libc::SYS_fdatasync,
    libc::SYS_ftruncate,
    libc::SYS_fallocate,
    libc::SYS_flock,
    libc::SYS_dup,
    libc::SYS_dup3,
    libc::SYS_pipe2,
    libc::SYS_ppoll,
    libc::SYS_unlinkat,
    libc::SYS_renameat,
    libc::SYS_renameat2,
    libc::SYS_linkat,
    libc::SYS_symlinkat,
    libc::SYS_mkdirat,
    libc::SYS_fchmod,
    libc::SYS_fchmodat,
    libc::SYS_utimensat,
    libc::SYS_copy_file_range,
    libc::SYS_sendfile,
    libc::SYS_fstatfs,
    libc::SYS_statfs,
    libc::SYS_fadvise64,
    // Memory.
    libc::SYS_brk,
    libc::SYS_mmap,
    libc::SYS_munmap,
    libc::SYS_mremap,
    libc::SYS_mprotect,
    libc::SYS_madvise,
    // Threads, signals, time, the process itself.
    libc::SYS_clone,
    libc::SYS_clone3,
    libc::SYS_futex,
    libc::SYS_set_robust_list,
    libc::SYS_rseq,
    libc::SYS_sched_yield,
    libc::SYS_sched_getaffinity,
    libc::SYS_rt_sigaction,
    libc::SYS_rt_sigprocmask,
    libc::SYS_rt_sigreturn,
    libc::SYS_sigaltstack,
    libc::SYS_clock_gettime,
    libc::SYS_clock_nanosleep,
    libc::SYS_nanosleep,
    libc::SYS_gettid,
    libc::SYS_getpid,
    libc::SYS_getuid,
    libc::SYS_geteuid,
    libc::SYS_getgid,
    libc::SYS_getegid,
    libc::SYS_getrandom,
    libc::SYS_prlimit64,
    libc::SYS_uname,
    libc::SYS_exit,
    libc::SYS_exit_group,
];

/// The older calls x86-64 keeps beside their `*at` forms; glibc and the C
/// libraries still make some of them (`readlink` for a path's real name).
#[cfg(target_arch = "x86_64")]
const ALLOWED_X86_64: &[i64] = &[
    libc::SYS_open,
    libc::SYS_stat,
    libc::SYS_lstat,
    libc::SYS_access,
    libc::SYS_readlink,
    libc::SYS_poll,
    libc::SYS_dup2,
    libc::SYS_rename,
    libc::SYS_link,
    libc::SYS_symlink,
    libc::SYS_chmod,
    libc::SYS_unlink,
    libc::SYS_mkdir,
    libc::SYS_getdents,
    libc::SYS_arch_prctl,
];
#[cfg(not(target_arch = "x86_64"))]
const ALLOWED_X86_64: &[i64] = &[];

/// Calls allowed only with some arguments: signals to this process alone
/// (a held Ctrl-C raised again once a write is whole; a build's test hook), or
/// signal 0 to any, which only asks whether a process runs (a temporary
/// file's owner); a thread's name and nothing else of `prctl`.
fn conditional(me: u64) -> Result<Vec<(i64, Vec<SeccompRule>)>, seccompiler::BackendError> {
    use seccompiler::{SeccompCmpArgLen::Dword, SeccompCmpOp::Eq, SeccompCondition as When};
    let rule = |conditions: Vec<When>| SeccompRule::new(conditions);
    Ok(vec![
        (
            libc::SYS_kill,
            vec![
                rule(vec![When::new(0, Dword, Eq, me)?])?,
                rule(vec![When::new(1, Dword, Eq, 0)?])?,
            ],
        ),
        (
            libc::SYS_tgkill,
            vec![rule(vec![When::new(0, Dword, Eq, me)?])?],
        ),
        (
            libc::SYS_prctl,
            vec![
                rule(vec![When::new(0, Dword, Eq, libc::PR_SET_NAME as u64)?])?,
                rule(vec![When::new(0, Dword, Eq, libc::PR_GET_NAME as u64)?])?,
            ],
        ),
    ])
}

/// Installs the filter on this thread (the worker has no other yet; threads it
/// starts inherit it).
pub(super) fn apply() -> Result<(), String> {
    let arch = TargetArch::try_from(std::env::consts::ARCH).map_err(|e| e.to_string())?;
    let me = std::process::id() as u64;
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = ALLOWED
        .iter()
        .chain(ALLOWED_X86_64)
        .map(|&call| (call, Vec::new()))
        .collect();
    rules.extend(conditional(me).map_err(|e| e.to_string())?);
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::KillProcess,
        SeccompAction::Allow,
        arch,
    )
    .map_err(|e| e.to_string())?;
    let program: BpfProgram = filter
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    seccompiler::apply_filter(&program).map_err(|e| e.to_string())
}
