//! Local processes of pods: spawning a launch plan in its own process group with output to the
//! pod's log file, signalling the whole group (SIGTERM, SIGKILL, SIGSTOP, SIGCONT), and the
//! table of live groups the runner kills when it exits so no pod process outlives it.
//!
//! Orphan protection has three layers: the runner kills every group in the table on its way
//! out; each child is started through `setpriv --pdeathsig KILL` when `setpriv` exists, so even
//! a SIGKILLed runner takes its children with it; and `e2e/down` kills the pids recorded in
//! `<run dir>/pods/*.pid`.

use std::collections::BTreeSet;
use std::io::Write;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::{Mutex, OnceLock};

use rustix::process::{Pid, Signal};
use tokio::process::{Child, Command};

use super::launch::LaunchPlan;

/// Errors starting or signalling a process.
#[derive(Debug, thiserror::Error)]
pub enum ProcessError {
    /// The mapped program does not exist or is not executable.
    #[error("program {0} does not exist or is not executable")]
    NotExecutable(PathBuf),
    /// Opening the log file failed.
    #[error("opening log file {path}: {source}")]
    Log {
        /// The log file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// `fork`/`exec` failed.
    #[error("starting {program}: {source}")]
    Spawn {
        /// The program.
        program: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Sending a signal failed (other than the group being gone already).
    #[error("signalling process group {pgid}: {source}")]
    Signal {
        /// The process group.
        pgid: u32,
        /// The cause.
        source: std::io::Error,
    },
}

/// Signals the runner sends to pod processes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sig {
    /// Polite stop (deletion).
    Term,
    /// Forced stop (grace period over, failure simulation).
    Kill,
    /// Freeze (failure simulation).
    Stop,
    /// Thaw.
    Cont,
}

impl Sig {
    fn raw(self) -> Signal {
        match self {
            Self::Term => Signal::TERM,
            Self::Kill => Signal::KILL,
            Self::Stop => Signal::STOP,
            Self::Cont => Signal::CONT,
        }
    }
}

/// Sends `sig` to the process group led by `pgid`. A group that no longer exists is not an
/// error (the process exited on its own).
pub fn signal_group(pgid: u32, sig: Sig) -> Result<(), ProcessError> {
    let Some(pid) = i32::try_from(pgid).ok().and_then(Pid::from_raw) else {
        return Ok(());
    };
    match rustix::process::kill_process_group(pid, sig.raw()) {
        Ok(()) | Err(rustix::io::Errno::SRCH) => Ok(()),
        Err(e) => Err(ProcessError::Signal {
            pgid,
            source: e.into(),
        }),
    }
}

/// Exit code and terminating signal of a finished process.
pub fn exit_info(status: ExitStatus) -> (i32, Option<i32>) {
    (status.code().unwrap_or(0), status.signal())
}

/// Process groups of live pod processes.
#[derive(Debug, Default)]
pub struct ProcessTable {
    groups: Mutex<BTreeSet<u32>>,
}

impl ProcessTable {
    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeSet<u32>> {
        self.groups
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Records a live group.
    pub fn insert(&self, pgid: u32) {
        self.lock().insert(pgid);
    }

    /// Forgets a group (its leader was reaped).
    pub fn remove(&self, pgid: u32) {
        self.lock().remove(&pgid);
    }

    /// Live groups.
    pub fn groups(&self) -> Vec<u32> {
        self.lock().iter().copied().collect()
    }

    /// Sends `sig` to every live group (SIGCONT first for SIGTERM so frozen ones can react).
    pub fn signal_all(&self, sig: Sig) {
        for pgid in self.groups() {
            if sig == Sig::Term {
                let _ = signal_group(pgid, Sig::Cont);
            }
            if let Err(e) = signal_group(pgid, sig) {
                tracing::warn!(pgid, error = %e, "signalling pod process group");
            }
        }
    }
}

fn setpriv() -> Option<&'static Path> {
    static FOUND: OnceLock<Option<PathBuf>> = OnceLock::new();
    FOUND
        .get_or_init(|| {
            ["/usr/bin/setpriv", "/bin/setpriv"]
                .iter()
                .map(PathBuf::from)
                .find(|p| is_executable(p))
        })
        .as_deref()
}

fn is_executable(path: &Path) -> bool {
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// Starts `plan` in a new process group, stdout and stderr appended to `log`, after writing
/// `banner` as one line to the log. The caller records the child in the [`ProcessTable`].
pub fn spawn(plan: &LaunchPlan, log: &Path, banner: &str) -> Result<Child, ProcessError> {
    if !is_executable(&plan.program) {
        return Err(ProcessError::NotExecutable(plan.program.clone()));
    }
    let log_err = |source| ProcessError::Log {
        path: log.to_path_buf(),
        source,
    };
    if let Some(dir) = log.parent() {
        std::fs::create_dir_all(dir).map_err(log_err)?;
    }
    let mut out = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(log)
        .map_err(log_err)?;
    writeln!(out, "--- pod-runner: {banner}").map_err(log_err)?;
    let err = out.try_clone().map_err(log_err)?;
    let mut cmd = match setpriv() {
        Some(wrapper) => {
            let mut c = Command::new(wrapper);
            c.args(["--pdeathsig", "KILL", "--"]).arg(&plan.program);
            c
        }
        None => Command::new(&plan.program),
    };
    cmd.args(&plan.args)
        .env_clear()
        .envs(plan.env.iter().map(|(k, v)| (k, v)))
        .current_dir(&plan.cwd)
        .stdin(Stdio::null())
        .stdout(Stdio::from(out))
        .stderr(Stdio::from(err))
        .process_group(0)
        .kill_on_drop(false);
    cmd.spawn().map_err(|source| ProcessError::Spawn {
        program: plan.program.clone(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn plan(script: &str, dir: &Path) -> LaunchPlan {
        LaunchPlan {
            program: "/bin/sh".into(),
            args: vec!["-c".into(), script.into()],
            env: vec![("GREETING".into(), "hello".into())],
            cwd: dir.to_path_buf(),
        }
    }

    #[tokio::test]
    async fn runs_in_its_own_group_with_a_clean_env_and_logs() {
        let dir = std::env::temp_dir().join(format!("pod-runner-process-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let log = dir.join("p.log");
        let mut child = spawn(
            &plan("echo $GREETING ${HOME:-nohome}; exit 3", &dir),
            &log,
            "start 1",
        )
        .unwrap();
        let status = child.wait().await.unwrap();
        assert_eq!(exit_info(status), (3, None));
        let text = std::fs::read_to_string(&log).unwrap();
        assert_eq!(text, "--- pod-runner: start 1\nhello nohome\n");
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[tokio::test]
    async fn signals_reach_the_whole_group() {
        let dir = std::env::temp_dir().join(format!("pod-runner-signal-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        // The shell starts a grandchild; killing the group must end both.
        let mut child = spawn(&plan("sleep 30 & wait", &dir), &dir.join("p.log"), "x").unwrap();
        let pgid = child.id().unwrap();
        let table = ProcessTable::default();
        table.insert(pgid);
        signal_group(pgid, Sig::Stop).unwrap();
        signal_group(pgid, Sig::Cont).unwrap();
        table.signal_all(Sig::Kill);
        let status = tokio::time::timeout(Duration::from_secs(5), child.wait())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(exit_info(status).1, Some(9));
        table.remove(pgid);
        assert!(table.groups().is_empty());
        // The group is gone: signalling it again is fine.
        tokio::time::sleep(Duration::from_millis(100)).await;
        signal_group(pgid, Sig::Kill).unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn missing_program_is_a_clear_error() {
        let mut p = plan("true", Path::new("/"));
        p.program = "/nonexistent/binary".into();
        assert!(matches!(
            spawn(&p, Path::new("/tmp/x.log"), "x"),
            Err(ProcessError::NotExecutable(_))
        ));
    }
}
