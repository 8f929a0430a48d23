//! Image names: `<policy>.<volume>` (volplugin's), and the RBD lock id of a host.

use volcore::{HostName, PolicyName, VolumeName, VolumeRef};

/// The RBD lock id a host takes on the images it mounts.
pub fn lock_id(host: &HostName) -> String {
    format!("volcore:{host}")
}

/// The image of a volume: `<policy>.<volume>`.
pub fn image_name(v: &VolumeRef) -> String {
    format!("{}.{}", v.policy, v.volume)
}

/// The volume of an image name, if it is one of ours.
pub fn volume_of_image(image: &str) -> Option<VolumeRef> {
    let (p, v) = image.split_once('.')?;
    Some(VolumeRef::new(
        PolicyName::new(p).ok()?,
        VolumeName::new(v).ok()?,
    ))
}
