//! Fencing: the RBD advisory lock `volcore:<host>` a mounting host takes, and the
//! blocklisting of a stale holder's clients before its lock is broken.

use tracing::warn;
use volcore::driver::{DriverError, Fenced, VolumeSpec};
use volcore::HostName;

use crate::config::{timeout_of, Params};
use crate::naming::lock_id;
use crate::rbd::{self, Errno, ImageSpec};
use crate::RbdDriver;

/// Clients fenced with no stale RBD lock left to name their holder (a takeover retried
/// after an earlier attempt broke the lock).
fn fenced_unlocked(spec: &VolumeSpec, img: &ImageSpec, clients: Vec<String>) -> Vec<Fenced> {
    if clients.is_empty() {
        return Vec::new();
    }
    warn!(volume = %spec.volume, image = %img.spec(), clients = ?clients, "fenced clients that still had the volume open");
    vec![Fenced {
        holder: "unknown (its RBD lock was already broken)".into(),
        clients,
    }]
}

impl RbdDriver {
    /// Takes the RBD lock `volcore:<host>`. The caller holds the store's mount lock, so
    /// any other holder is stale. When this host does not have the image attached — a
    /// takeover, or the retry of one that failed half-way — every client that has the
    /// image open is somebody else's and is blocklisted (`ceph osd blocklist add`) *before*
    /// a stale lock is broken (`rbd lock rm`, which blocklists the client that took it) and
    /// before the volume is treated as ours: a failure at any point leaves the old holder
    /// cut off or the image still locked, never the old host writing under our lock.
    /// When the image is attached here (a restart re-adopting its mount), the open client
    /// is ours and nobody is fenced.
    pub(crate) async fn take_lock(
        &self,
        spec: &VolumeSpec,
        host: &HostName,
    ) -> Result<Vec<Fenced>, DriverError> {
        let p = Params::of(spec)?;
        let t = timeout_of(spec);
        let img = &p.image;
        let what = img.to_string();
        let ours = lock_id(host);
        let lock = self.image_lock(img);
        let _g = lock.lock().await;
        let here = self.attached_here(&self.attached().await?, img);
        let mut cut: Vec<String> = Vec::new();
        if !here {
            for w in self.cli.watchers(img, t).await? {
                self.cli.blocklist(&what, &w.address, t).await?;
                cut.push(w.address);
            }
        }
        let add = self.cli.rbd_cmd(&["lock", "add", &img.spec(), &ours], t);
        if !p.exclusive_lock() {
            let out = self.cli.exec("lock", &what, &add).await?;
            if out.success() {
                return Ok(fenced_unlocked(spec, img, cut));
            }
            if rbd::errno(&out) != Errno::Busy {
                return Err(rbd::failure("lock", &what, &add, &out));
            }
        } else if here {
            // The image's own lock is held by whichever client writes: ours.
            return Ok(Vec::new());
        }
        let locks = self.cli.lockers(img, t).await?;
        if locks.iter().any(|l| l.id == ours) {
            // Ours, from before a restart (its open clients, if any, were fenced above).
            return Ok(fenced_unlocked(spec, img, cut));
        }
        let mut fenced = Vec::new();
        for l in &locks {
            self.cli
                .run(
                    "break lock",
                    &what,
                    self.cli
                        .rbd_cmd(&["lock", "rm", &img.spec(), &l.id, &l.locker], t),
                )
                .await
                .or_else(|e| match e {
                    DriverError::NotFound { .. } => Ok(String::new()),
                    e => Err(e),
                })?;
            let holder = l.id.strip_prefix("volcore:").unwrap_or(&l.id).to_owned();
            let mut clients = std::mem::take(&mut cut);
            clients.push(l.address.clone());
            warn!(volume = %spec.volume, image = %img.spec(), stale_holder = %holder, clients = ?clients, "fenced the previous holder of the volume");
            fenced.push(Fenced { holder, clients });
        }
        if !p.exclusive_lock() {
            self.cli.run("lock", &what, add).await?;
        }
        if !cut.is_empty() {
            fenced.extend(fenced_unlocked(spec, img, cut));
        }
        Ok(fenced)
    }

    /// `rbd lock ls` + `rbd lock rm` of this host's lock, without blocklisting (the client
    /// that took it is long gone, and the lock is ours to drop).
    pub(crate) async fn drop_lock(
        &self,
        spec: &VolumeSpec,
        host: &HostName,
    ) -> Result<(), DriverError> {
        let p = Params::of(spec)?;
        if p.exclusive_lock() {
            return Ok(());
        }
        let t = timeout_of(spec);
        let img = &p.image;
        let ours = lock_id(host);
        let locks = match self.cli.lockers(img, t).await {
            Err(DriverError::NotFound { .. }) => return Ok(()),
            other => other?,
        };
        for l in locks.iter().filter(|l| l.id == ours) {
            let res = self
                .cli
                .run(
                    "unlock",
                    &img.to_string(),
                    self.cli.rbd_cmd(
                        &[
                            "--rbd_blocklist_on_break_lock=false",
                            "lock",
                            "rm",
                            &img.spec(),
                            &l.id,
                            &l.locker,
                        ],
                        t,
                    ),
                )
                .await;
            match res {
                Ok(_) | Err(DriverError::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}
