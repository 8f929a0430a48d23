//! Docker's VolumeDriver plugin protocol, typed: one request variant per endpoint with
//! the fields that endpoint carries, and the responses Docker reads. The wire format is
//! Docker's (`POST /VolumeDriver.Mount` with `{"Name":…,"ID":…}`, answers with `Err`).

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// A request, by endpoint.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Request {
    /// `Plugin.Activate`: which protocols the plugin implements.
    Activate,
    /// `VolumeDriver.Capabilities`.
    Capabilities,
    /// `VolumeDriver.Create`.
    Create {
        /// The volume name (`policy/volume`, or a bare name with a default policy).
        name: String,
        /// `docker volume create -o k=v`.
        opts: BTreeMap<String, String>,
    },
    /// `VolumeDriver.Remove`.
    Remove {
        /// The volume name.
        name: String,
    },
    /// `VolumeDriver.Mount`: container `id` starts using the volume.
    Mount {
        /// The volume name.
        name: String,
        /// The mount's id (one per container mount).
        id: String,
    },
    /// `VolumeDriver.Unmount`.
    Unmount {
        /// The volume name.
        name: String,
        /// The mount's id.
        id: String,
    },
    /// `VolumeDriver.Path`.
    Path {
        /// The volume name.
        name: String,
    },
    /// `VolumeDriver.Get`.
    Get {
        /// The volume name.
        name: String,
    },
    /// `VolumeDriver.List`.
    List,
}

/// A request the plugin cannot read.
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    /// No such endpoint.
    #[error("unknown endpoint /{0}")]
    UnknownEndpoint(String),
    /// The body is not what the endpoint takes.
    #[error("request body of /{endpoint} is not valid: {why}")]
    BadBody {
        /// The endpoint.
        endpoint: String,
        /// What was wrong.
        why: String,
    },
}

#[derive(Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
struct Body {
    name: String,
    #[serde(rename = "ID")]
    id: String,
    opts: Option<BTreeMap<String, String>>,
}

impl Request {
    /// The endpoint path (without the leading `/`).
    pub fn endpoint(&self) -> &'static str {
        match self {
            Self::Activate => "Plugin.Activate",
            Self::Capabilities => "VolumeDriver.Capabilities",
            Self::Create { .. } => "VolumeDriver.Create",
            Self::Remove { .. } => "VolumeDriver.Remove",
            Self::Mount { .. } => "VolumeDriver.Mount",
            Self::Unmount { .. } => "VolumeDriver.Unmount",
            Self::Path { .. } => "VolumeDriver.Path",
            Self::Get { .. } => "VolumeDriver.Get",
            Self::List => "VolumeDriver.List",
        }
    }

    /// Reads a request from its endpoint and body (an empty body is `{}`).
    pub fn parse(endpoint: &str, body: &[u8]) -> Result<Self, ProtocolError> {
        let b: Body = if body.iter().all(u8::is_ascii_whitespace) {
            Body::default()
        } else {
            serde_json::from_slice(body).map_err(|e| ProtocolError::BadBody {
                endpoint: endpoint.to_owned(),
                why: format!("not JSON of the expected shape: {e}"),
            })?
        };
        Ok(match endpoint {
            "Plugin.Activate" => Self::Activate,
            "VolumeDriver.Capabilities" => Self::Capabilities,
            "VolumeDriver.List" => Self::List,
            "VolumeDriver.Create" => Self::Create {
                name: b.name,
                opts: b.opts.unwrap_or_default(),
            },
            "VolumeDriver.Remove" => Self::Remove { name: b.name },
            "VolumeDriver.Mount" => Self::Mount {
                name: b.name,
                id: b.id,
            },
            "VolumeDriver.Unmount" => Self::Unmount {
                name: b.name,
                id: b.id,
            },
            "VolumeDriver.Path" => Self::Path { name: b.name },
            "VolumeDriver.Get" => Self::Get { name: b.name },
            other => return Err(ProtocolError::UnknownEndpoint(other.to_owned())),
        })
    }

    /// The request body as Docker sends it (for clients and tests).
    pub fn body(&self) -> Value {
        match self {
            Self::Activate | Self::Capabilities | Self::List => serde_json::json!({}),
            Self::Create { name, opts } => serde_json::json!({"Name": name, "Opts": opts}),
            Self::Remove { name } | Self::Path { name } | Self::Get { name } => {
                serde_json::json!({"Name": name})
            }
            Self::Mount { name, id } | Self::Unmount { name, id } => {
                serde_json::json!({"Name": name, "ID": id})
            }
        }
    }
}

/// One volume as `List` and `Get` describe it.
#[derive(Clone, PartialEq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct VolumeEntry {
    /// `policy/volume`.
    pub name: String,
    /// Where it is mounted on this host (empty: not mounted here).
    pub mountpoint: PathBuf,
    /// When it was created (RFC 3339; `Get` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub created_at: Option<String>,
    /// volcore's status (`Get` only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status: Option<Value>,
}

/// A response; every one carries `Err` (empty on success).
#[derive(Clone, PartialEq, Debug)]
pub enum Response {
    /// `Plugin.Activate`.
    Activate,
    /// `VolumeDriver.Capabilities`: the volumes are cluster-wide.
    Capabilities,
    /// Success with nothing to say (`Create`, `Remove`, `Unmount`).
    Done,
    /// `Mount` and `Path`.
    Mountpoint(PathBuf),
    /// `Get`.
    Volume(VolumeEntry),
    /// `List`.
    Volumes(Vec<VolumeEntry>),
    /// A failure, said to the user by Docker.
    Err(String),
}

impl Response {
    /// The JSON Docker reads.
    pub fn to_json(&self) -> Value {
        use serde_json::json;
        match self {
            Self::Activate => json!({"Implements": ["VolumeDriver"]}),
            Self::Capabilities => json!({"Capabilities": {"Scope": "global"}}),
            Self::Done => json!({"Err": ""}),
            Self::Mountpoint(p) => json!({"Mountpoint": p, "Err": ""}),
            Self::Volume(v) => json!({"Volume": v, "Err": ""}),
            Self::Volumes(vs) => json!({"Volumes": vs, "Err": ""}),
            Self::Err(e) => json!({"Err": e}),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_round_trip_through_their_wire_form() {
        let reqs = [
            Request::Activate,
            Request::Capabilities,
            Request::List,
            Request::Create {
                name: "p/v".into(),
                opts: BTreeMap::from([("size".into(), "1GB".into())]),
            },
            Request::Remove { name: "p/v".into() },
            Request::Mount {
                name: "p/v".into(),
                id: "c1".into(),
            },
            Request::Unmount {
                name: "p/v".into(),
                id: "c1".into(),
            },
            Request::Path { name: "p/v".into() },
            Request::Get { name: "p/v".into() },
        ];
        for r in reqs {
            let body = serde_json::to_vec(&r.body()).unwrap_or_default();
            assert_eq!(Request::parse(r.endpoint(), &body), Ok(r.clone()));
        }
        assert_eq!(
            Request::parse("VolumeDriver.Nope", b"{}"),
            Err(ProtocolError::UnknownEndpoint("VolumeDriver.Nope".into()))
        );
        assert!(matches!(
            Request::parse("VolumeDriver.Mount", b"{not json"),
            Err(ProtocolError::BadBody { .. })
        ));
        assert_eq!(Request::parse("VolumeDriver.List", b""), Ok(Request::List));
    }

    #[test]
    fn responses_are_dockers_json() {
        assert_eq!(Response::Done.to_json(), serde_json::json!({"Err": ""}));
        assert_eq!(
            Response::Mountpoint("/m/p/v".into()).to_json(),
            serde_json::json!({"Mountpoint": "/m/p/v", "Err": ""})
        );
        let e = VolumeEntry {
            name: "p/v".into(),
            mountpoint: PathBuf::new(),
            created_at: None,
            status: None,
        };
        assert_eq!(
            Response::Volumes(vec![e]).to_json(),
            serde_json::json!({"Volumes": [{"Name": "p/v", "Mountpoint": ""}], "Err": ""})
        );
    }
}
