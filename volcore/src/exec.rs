//! Running external commands (mkfs, losetup, mount, rbd …) with a timeout that kills the
//! child, behind a trait so drivers can be tested with a recording fake.

use std::fmt;
use std::time::Duration;

use async_trait::async_trait;

/// A command to run.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Cmd {
    /// The program.
    pub program: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// How long it may run before it is killed.
    pub timeout: Duration,
}

impl Cmd {
    /// `program args…` with a timeout.
    pub fn new(
        program: impl Into<String>,
        args: impl IntoIterator<Item = impl Into<String>>,
        timeout: Duration,
    ) -> Self {
        Self {
            program: program.into(),
            args: args.into_iter().map(Into::into).collect(),
            timeout,
        }
    }
}

impl fmt::Display for Cmd {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.program)?;
        for a in &self.args {
            write!(f, " {a}")?;
        }
        Ok(())
    }
}

/// What a finished command said.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct Output {
    /// Exit code (`-1` when killed by a signal).
    pub status: i32,
    /// Standard output.
    pub stdout: String,
    /// Standard error.
    pub stderr: String,
}

impl Output {
    /// Exit code 0.
    pub fn success(&self) -> bool {
        self.status == 0
    }
}

/// Why a command could not be run to completion.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ExecError {
    /// It could not be started.
    #[error("cannot run {program}: {source}")]
    Spawn {
        /// The program.
        program: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// It ran past its timeout and was killed.
    #[error("{cmd} did not finish within {timeout:?} and was killed")]
    Timeout {
        /// The command line.
        cmd: String,
        /// The limit.
        timeout: Duration,
    },
}

/// Runs commands.
#[async_trait]
pub trait Exec: Send + Sync + fmt::Debug {
    /// Runs `cmd` to completion (or kills it at its timeout).
    async fn run(&self, cmd: &Cmd) -> Result<Output, ExecError>;
}

/// Runs real processes (tokio; the child is killed when its timeout passes).
#[derive(Clone, Copy, Debug, Default)]
pub struct SystemExec;

#[async_trait]
impl Exec for SystemExec {
    async fn run(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        let child = tokio::process::Command::new(&cmd.program)
            .args(&cmd.args)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .map_err(|source| ExecError::Spawn {
                program: cmd.program.clone(),
                source,
            })?;
        tracing::debug!(cmd = %cmd, "running");
        match tokio::time::timeout(cmd.timeout, child.wait_with_output()).await {
            // Dropping the future drops the child, which kills it.
            Err(_) => Err(ExecError::Timeout {
                cmd: cmd.to_string(),
                timeout: cmd.timeout,
            }),
            Ok(Err(source)) => Err(ExecError::Spawn {
                program: cmd.program.clone(),
                source,
            }),
            Ok(Ok(out)) => Ok(Output {
                status: out.status.code().unwrap_or(-1),
                stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
                stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn runs_and_captures() {
        let out = SystemExec
            .run(&Cmd::new(
                "sh",
                ["-c", "echo out; echo err >&2; exit 3"],
                Duration::from_secs(5),
            ))
            .await
            .unwrap();
        assert_eq!(
            (out.status, out.stdout.as_str(), out.stderr.as_str()),
            (3, "out\n", "err\n")
        );
    }

    #[tokio::test]
    async fn a_hung_command_is_killed_at_its_timeout() {
        let start = std::time::Instant::now();
        let err = SystemExec
            .run(&Cmd::new("sleep", ["30"], Duration::from_millis(200)))
            .await
            .unwrap_err();
        assert!(matches!(err, ExecError::Timeout { .. }), "{err}");
        assert!(start.elapsed() < Duration::from_secs(5));
    }

    #[tokio::test]
    async fn missing_program() {
        let err = SystemExec
            .run(&Cmd::new(
                "/nonexistent/prog",
                Vec::<String>::new(),
                Duration::from_secs(1),
            ))
            .await
            .unwrap_err();
        assert!(
            err.to_string().starts_with("cannot run /nonexistent/prog"),
            "{err}"
        );
    }
}
