//! A recording, scripted [`Exec`]: tests of drivers that shell out (rbd, losetup, mount)
//! say which exact command lines they expect, in order, and what each one prints, then
//! check that the driver ran exactly those. Outputs are meant to be captured from the
//! real tools.

use std::collections::VecDeque;
use std::sync::Mutex;

use async_trait::async_trait;

use crate::exec::{Cmd, Exec, ExecError, Output};

/// What one expected command does.
#[derive(Clone, Debug)]
pub enum Reply {
    /// It exits with this output.
    Exit(Output),
    /// It hangs past its timeout and is killed.
    Hang,
}

/// The scripted exec.
#[derive(Debug, Default)]
pub struct FakeExec {
    script: Mutex<VecDeque<(String, Reply)>>,
    calls: Mutex<Vec<String>>,
    surprises: Mutex<Vec<String>>,
    unordered: bool,
}

impl FakeExec {
    /// No expectations yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// Expectations matched in any order (the first expected line equal to the command
    /// runs): for operations that run concurrently.
    pub fn unordered() -> Self {
        Self {
            unordered: true,
            ..Self::default()
        }
    }

    /// Expects `line` (program and arguments joined by single spaces) next; it prints
    /// `stdout` and exits 0.
    pub fn ok(&self, line: &str, stdout: &str) -> &Self {
        self.push(
            line,
            Reply::Exit(Output {
                status: 0,
                stdout: stdout.to_owned(),
                stderr: String::new(),
            }),
        )
    }

    /// Expects `line` next; it prints `stderr` and exits `status`.
    pub fn fail(&self, line: &str, status: i32, stderr: &str) -> &Self {
        self.push(
            line,
            Reply::Exit(Output {
                status,
                stdout: String::new(),
                stderr: stderr.to_owned(),
            }),
        )
    }

    /// Expects `line` next; it hangs until killed at its timeout.
    pub fn hang(&self, line: &str) -> &Self {
        self.push(line, Reply::Hang)
    }

    fn push(&self, line: &str, r: Reply) -> &Self {
        self.script.lock().unwrap().push_back((line.to_owned(), r));
        self
    }

    /// The command lines run so far.
    pub fn calls(&self) -> Vec<String> {
        self.calls.lock().unwrap().clone()
    }

    /// Panics unless every expected command ran, in order, and nothing else did.
    pub fn assert_done(&self) {
        let surprises = self.surprises.lock().unwrap().clone();
        assert!(
            surprises.is_empty(),
            "unexpected commands: {surprises:#?}\nall calls: {:#?}",
            self.calls()
        );
        let left: Vec<String> = self
            .script
            .lock()
            .unwrap()
            .iter()
            .map(|(l, _)| l.clone())
            .collect();
        assert!(
            left.is_empty(),
            "expected commands never ran: {left:#?}\ncalls: {:#?}",
            self.calls()
        );
    }

    /// Records a command the script did not expect; it "fails" like a missing program.
    fn surprise(&self, note: String, stderr: String) -> Result<Output, ExecError> {
        self.surprises.lock().unwrap().push(note);
        Ok(Output {
            status: 127,
            stdout: String::new(),
            stderr,
        })
    }
}

#[async_trait]
impl Exec for FakeExec {
    async fn run(&self, cmd: &Cmd) -> Result<Output, ExecError> {
        let line = cmd.to_string();
        self.calls.lock().unwrap().push(line.clone());
        let next = {
            let mut script = self.script.lock().unwrap();
            match script.iter().position(|(l, _)| *l == line) {
                Some(i) if self.unordered => script.remove(i),
                _ => script.pop_front(),
            }
        };
        match next {
            Some((want, reply)) if want == line => match reply {
                Reply::Exit(o) => Ok(o),
                Reply::Hang => {
                    tokio::time::sleep(cmd.timeout).await;
                    Err(ExecError::Timeout {
                        cmd: line,
                        timeout: cmd.timeout,
                    })
                }
            },
            Some((want, _)) => self.surprise(
                format!("ran `{line}`, expected `{want}`"),
                format!("FakeExec: unexpected command `{line}` (expected `{want}`)"),
            ),
            None => self.surprise(
                format!("ran `{line}` after the script ended"),
                format!("FakeExec: unexpected command `{line}`"),
            ),
        }
    }
}
