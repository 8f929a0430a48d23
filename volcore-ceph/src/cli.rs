//! rbd command plumbing: every command through [`Exec`] with its timeout, failures
//! turned into [`DriverError`]s by meaning, read-only commands retried once, JSON output
//! parsed.

use std::sync::Arc;
use std::time::Duration;

use tracing::{debug, warn};
use volcore::driver::DriverError;
use volcore::exec::{Cmd, Exec, Output};

use crate::config::CephConfig;
use crate::rbd::{self, ImageSpec, Locker, Mapped, Status};

/// The cluster's command line: its configuration and the way commands run.
#[derive(Debug)]
pub(crate) struct Cli {
    pub(crate) cfg: CephConfig,
    exec: Arc<dyn Exec>,
}

impl Cli {
    pub(crate) fn new(cfg: CephConfig, exec: Arc<dyn Exec>) -> Self {
        Self { cfg, exec }
    }

    pub(crate) fn base(&self) -> Vec<String> {
        let mut a = Vec::new();
        if let Some(c) = &self.cfg.conf {
            a.push("-c".to_owned());
            a.push(c.display().to_string());
        }
        if let Some(id) = &self.cfg.id {
            a.push("--id".to_owned());
            a.push(id.clone());
        }
        a
    }

    pub(crate) fn rbd_cmd(&self, args: &[&str], timeout: Duration) -> Cmd {
        let mut a = self.base();
        a.extend(args.iter().map(|s| (*s).to_owned()));
        Cmd::new(self.cfg.programs.rbd.clone(), a, timeout)
    }

    pub(crate) async fn exec(
        &self,
        op: &'static str,
        what: &str,
        cmd: &Cmd,
    ) -> Result<Output, DriverError> {
        debug!(cmd = %cmd, "rbd driver");
        self.exec
            .run(cmd)
            .await
            .map_err(|e| rbd::exec_error(op, what, e))
    }

    /// Runs a command that changes something: once, no retry.
    pub(crate) async fn run(
        &self,
        op: &'static str,
        what: &str,
        cmd: Cmd,
    ) -> Result<String, DriverError> {
        let out = self.exec(op, what, &cmd).await?;
        if out.success() {
            Ok(out.stdout)
        } else {
            Err(rbd::failure(op, what, &cmd, &out))
        }
    }

    /// Runs a read-only command, trying again once if it times out.
    pub(crate) async fn read(
        &self,
        op: &'static str,
        what: &str,
        cmd: Cmd,
    ) -> Result<String, DriverError> {
        match self.run(op, what, cmd.clone()).await {
            Err(DriverError::Timeout { .. }) => {
                warn!(cmd = %cmd, "timed out; trying once more");
                self.run(op, what, cmd).await
            }
            other => other,
        }
    }

    /// Runs a read-only rbd command (its `args` ask for `--format json`) and parses its
    /// output.
    pub(crate) async fn read_json<T: for<'de> serde::Deserialize<'de>>(
        &self,
        op: &'static str,
        what: &str,
        args: &[&str],
        t: Duration,
    ) -> Result<T, DriverError> {
        let cmd = self.rbd_cmd(args, t);
        let out = self.read(op, what, cmd.clone()).await?;
        rbd::parse(op, what, &cmd, &out)
    }

    pub(crate) async fn lockers(
        &self,
        img: &ImageSpec,
        t: Duration,
    ) -> Result<Vec<Locker>, DriverError> {
        self.read_json(
            "lock ls",
            &img.to_string(),
            &["lock", "ls", "--format", "json", &img.spec()],
            t,
        )
        .await
    }

    /// Cuts a client off the cluster (`ceph osd blocklist add`).
    pub(crate) async fn blocklist(
        &self,
        what: &str,
        addr: &str,
        t: Duration,
    ) -> Result<(), DriverError> {
        self.run(
            "fence",
            what,
            Cmd::new(
                self.cfg.programs.ceph.clone(),
                self.base()
                    .into_iter()
                    .chain(["osd", "blocklist", "add", addr].map(str::to_owned)),
                t,
            ),
        )
        .await
        .map(|_| ())
    }

    /// The clients that have the image open (one `rbd status`).
    pub(crate) async fn watchers(
        &self,
        img: &ImageSpec,
        t: Duration,
    ) -> Result<Vec<rbd::Watcher>, DriverError> {
        let st: Status = self
            .read_json(
                "status",
                &img.to_string(),
                &["status", "--format", "json", &img.spec()],
                t,
            )
            .await?;
        Ok(st.watchers)
    }

    pub(crate) async fn mapped(
        &self,
        nbd: bool,
        what: &str,
        t: Duration,
    ) -> Result<Vec<Mapped>, DriverError> {
        let mut args = vec!["device", "list"];
        if nbd {
            args.extend(["-t", "nbd"]);
        }
        args.extend(["--format", "json"]);
        self.read_json("device list", what, &args, t).await
    }

    /// SIGKILLs `pids` (best effort: one may have exited meanwhile).
    pub(crate) async fn kill(&self, pids: &[u32], t: Duration) {
        for pid in pids {
            let _ = self
                .exec
                .run(&Cmd::new("kill", ["-9".to_owned(), pid.to_string()], t))
                .await;
        }
    }
}

pub(crate) fn io_err(op: &'static str, what: &str, e: std::io::Error) -> DriverError {
    DriverError::io(op, what, e)
}
