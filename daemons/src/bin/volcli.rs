//! volcli — the operator CLI: volplugin's command tree over volmaster's REST API, plus
//! offline `check` commands that validate files as an upload would.
//!
//! Exit codes: 0 ok, 1 error, 2 usage, 3 not found, 4 conflict or locked.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};
use reqwest::{Method, StatusCode};
use serde_json::{json, Value};
use volcore::{GlobalConfig, Policy, PolicyName, RuntimeOptions, VolumeRef};

#[derive(Parser)]
#[command(name = "volcli", version, about = "volcore's operator CLI")]
struct Cli {
    /// volmaster's URL.
    #[arg(
        long,
        global = true,
        env = "VOLCLI_MASTER",
        default_value = "http://127.0.0.1:9005"
    )]
    master: String,
    /// Stable machine-readable JSON output.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Global configuration.
    Global {
        #[command(subcommand)]
        cmd: GlobalCmd,
    },
    /// Policies and their revisions.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Volumes, their runtime options and snapshots.
    Volume {
        #[command(subcommand)]
        cmd: VolumeCmd,
    },
    /// Use locks.
    Use {
        #[command(subcommand)]
        cmd: UseCmd,
    },
    /// Runtime option files (offline).
    Runtime {
        #[command(subcommand)]
        cmd: FileCmd,
    },
    /// Finds what crashes left (storage without a record, records without storage, stale
    /// locks and mount records, orphan keys) and prints each with its fix; a dry run
    /// unless --repair. Exit status: 0 nothing left, 4 leftovers remain, 1 error.
    /// Host-side leftovers (mounts nobody recorded) are each plugin's: it repairs them at
    /// start, and `GET /check` on its socket reports them.
    Check {
        /// Apply the safe fixes (each re-verified at the moment it is applied).
        #[arg(long)]
        repair: bool,
    },
}

#[derive(Subcommand)]
enum GlobalCmd {
    /// Upload the global configuration (JSON on standard input).
    Upload,
    /// Show the global configuration.
    Get,
    /// Validate a global configuration file offline.
    Check {
        /// The file (`-` for standard input).
        file: PathBuf,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Upload a policy (JSON on standard input).
    Upload { name: String },
    /// Show a policy.
    Get { name: String },
    /// List policies.
    List,
    /// Delete a policy (volumes keep their own copy).
    Delete {
        name: String,
        /// Delete even while volumes exist.
        #[arg(long, short)]
        force: bool,
    },
    /// Policy revisions.
    History {
        #[command(subcommand)]
        cmd: HistoryCmd,
    },
    /// Print `name<TAB>revision` for every upload from now on.
    Watch,
    /// Validate policy files offline as an upload would; print each expanded policy.
    Check {
        /// Policy name (default: each file's name without `.json`).
        #[arg(long)]
        name: Option<String>,
        /// Files to check (`-` for standard input, which needs --name).
        #[arg(required = true)]
        files: Vec<PathBuf>,
    },
}

#[derive(Subcommand)]
enum HistoryCmd {
    /// List a policy's revisions.
    List { name: String },
    /// Show one revision.
    Get { name: String, revision: u64 },
}

#[derive(Subcommand)]
enum VolumeCmd {
    /// Create a volume.
    Create {
        volume: String,
        /// Option overriding the policy (repeatable): key=value.
        #[arg(long = "opt", short = 'o')]
        opts: Vec<String>,
    },
    /// Show a volume.
    Get { volume: String },
    /// List the volumes of one policy (short names), or all (policy/volume).
    List { policy: Option<String> },
    /// List every volume as policy/volume.
    ListAll,
    /// Remove a volume: its storage, then its record.
    Remove {
        volume: String,
        /// Remove even while it is locked (mounted or in use).
        #[arg(long, short)]
        force: bool,
        /// How long to wait for its locks (e.g. 30s).
        #[arg(long, short)]
        timeout: Option<String>,
    },
    /// Remove only the record; the storage is kept.
    ForceRemove { volume: String },
    /// Runtime options.
    Runtime {
        #[command(subcommand)]
        cmd: RuntimeCmd,
    },
    /// Snapshots.
    Snapshot {
        #[command(subcommand)]
        cmd: SnapshotCmd,
    },
}

#[derive(Subcommand)]
enum RuntimeCmd {
    /// Show a volume's runtime options.
    Get { volume: String },
    /// Replace a volume's runtime options (JSON on standard input).
    Upload { volume: String },
}

#[derive(Subcommand)]
enum SnapshotCmd {
    /// Take a snapshot now.
    Take { volume: String },
    /// List a volume's snapshots.
    List { volume: String },
    /// Copy a snapshot into a new volume of the same policy.
    Copy {
        volume: String,
        snapshot: String,
        new_volume: String,
    },
}

#[derive(Subcommand)]
enum UseCmd {
    /// List use locks.
    List {
        /// Only this kind: mount or op.
        #[arg(long)]
        kind: Option<String>,
    },
    /// Show a volume's locks.
    Get { volume: String },
    /// Clear a volume's locks, whoever holds them.
    ForceRemove { volume: String },
    /// Run a command while holding the volume's maintenance locks.
    Exec {
        volume: String,
        /// The command and its arguments (after `--`).
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
}

#[derive(Subcommand)]
enum FileCmd {
    /// Validate a file offline as an upload would; print the result.
    Check {
        /// The file (`-` for standard input).
        file: PathBuf,
    },
}

/// An error with the exit code it maps to.
struct Fail {
    code: u8,
    /// Empty when the reasons were printed already.
    msg: String,
}

impl Fail {
    fn new(code: u8, msg: impl Into<String>) -> Self {
        Self {
            code,
            msg: msg.into(),
        }
    }
    fn usage(msg: impl Into<String>) -> Self {
        Self::new(2, msg)
    }
}

type Res<T> = Result<T, Fail>;

/// Prints a result: as JSON with `--json`, else through the human formatter.
type Printer<'a> = dyn Fn(&Value, &dyn Fn(&Value)) + 'a;

fn read(path: &Path) -> Res<Vec<u8>> {
    let mut buf = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut buf)
            .map_err(|e| Fail::new(1, format!("reading standard input: {e}")))?;
        return Ok(buf);
    }
    std::fs::read(path).map_err(|e| Fail::new(1, format!("reading {}: {e}", path.display())))
}

fn stdin_json() -> Res<Vec<u8>> {
    let buf = read(Path::new("-"))?;
    serde_json::from_slice::<Value>(&buf)
        .map_err(|e| Fail::new(1, format!("standard input is not JSON: {e}")))?;
    Ok(buf)
}

fn parse_vref(s: &str) -> Res<VolumeRef> {
    VolumeRef::parse(s).map_err(|e| Fail::usage(e.to_string()))
}

fn pretty(v: &Value) -> String {
    serde_json::to_string_pretty(v).unwrap_or_default()
}

struct Client {
    base: String,
    http: reqwest::Client,
}

impl Client {
    fn new(master: &str) -> Res<Self> {
        let base = master.trim_end_matches('/').to_owned();
        if !base.starts_with("http://") && !base.starts_with("https://") {
            return Err(Fail::usage(format!(
                "--master {master:?} must be an http:// URL"
            )));
        }
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .build()
            .map_err(|e| Fail::new(1, format!("http client: {e}")))?;
        Ok(Self { base, http })
    }

    async fn send(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
    ) -> Res<reqwest::Response> {
        self.send_within(method, path, body, None).await
    }

    async fn send_within(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Option<Duration>,
    ) -> Res<reqwest::Response> {
        let mut req = self.http.request(method, format!("{}{path}", self.base));
        if let Some(t) = timeout {
            req = req.timeout(t);
        }
        if let Some(b) = body {
            req = req.header("content-type", "application/json").body(b);
        }
        req.send().await.map_err(|e| {
            Fail::new(
                1,
                format!("cannot reach volmaster at {}: {e} (is it running? set --master or VOLCLI_MASTER)", self.base),
            )
        })
    }

    async fn call(&self, method: Method, path: &str, body: Option<Vec<u8>>) -> Res<Value> {
        self.answer(self.send(method, path, body).await?).await
    }

    /// [`call`](Self::call) that gives up (an error) after `timeout`.
    async fn call_within(
        &self,
        method: Method,
        path: &str,
        body: Option<Vec<u8>>,
        timeout: Duration,
    ) -> Res<Value> {
        let resp =
            tokio::time::timeout(timeout, self.send_within(method, path, body, Some(timeout)))
                .await
                .map_err(|_| {
                    Fail::new(1, format!("volmaster did not answer within {timeout:?}"))
                })??;
        self.answer(resp).await
    }

    async fn answer(&self, resp: reqwest::Response) -> Res<Value> {
        let status = resp.status();
        let text = resp
            .text()
            .await
            .map_err(|e| Fail::new(1, format!("reading the answer: {e}")))?;
        if status.is_success() {
            return Ok(if text.is_empty() {
                Value::Null
            } else {
                serde_json::from_str(&text).unwrap_or(Value::String(text))
            });
        }
        let msg = serde_json::from_str::<Value>(&text)
            .ok()
            .and_then(|v| v["error"]["message"].as_str().map(str::to_owned))
            .unwrap_or_else(|| format!("volmaster answered {status}: {text}"));
        let code = match status {
            StatusCode::NOT_FOUND => 3,
            StatusCode::CONFLICT | StatusCode::LOCKED => 4,
            StatusCode::BAD_REQUEST => 1,
            _ => 1,
        };
        Err(Fail::new(code, msg))
    }
}

fn seg(s: &str) -> String {
    // Names are validated; this only keeps a stray character from changing the path.
    s.chars()
        .filter(|c| c.is_ascii_alphanumeric() || "_-".contains(*c))
        .collect()
}

fn vpath(v: &VolumeRef) -> String {
    format!("/v1/volumes/{}/{}", v.policy, v.volume)
}

fn check_files(name: Option<String>, files: &[PathBuf]) -> Res<()> {
    let mut failed = false;
    for f in files {
        let n = match (&name, f.file_stem()) {
            (Some(n), _) => n.clone(),
            (None, Some(stem)) if f != Path::new("-") => stem.to_string_lossy().into_owned(),
            _ => {
                return Err(Fail::new(
                    1,
                    "reading a policy from standard input needs --name",
                ))
            }
        };
        let res = PolicyName::new(n).map_err(|e| e.to_string()).and_then(|n| {
            read(f)
                .map_err(|e| e.msg)
                .and_then(|b| Policy::from_json(&n, &b).map_err(|e| e.to_string()))
        });
        match res {
            Ok(p) => println!("{}", serde_json::to_string_pretty(&p).unwrap_or_default()),
            Err(e) => {
                eprintln!("{}: {e}", f.display());
                failed = true;
            }
        }
    }
    if failed {
        Err(Fail::new(1, "")) // each file's reason is printed above
    } else {
        Ok(())
    }
}

fn print_locks(locks: &Value, json_out: bool) {
    if json_out {
        println!("{}", pretty(locks));
        return;
    }
    let rows = locks.as_array().cloned().unwrap_or_default();
    if rows.is_empty() {
        return;
    }
    println!(
        "{:<32} {:<6} {:<20} {:<12} SINCE",
        "VOLUME", "KIND", "HOST", "REASON"
    );
    for l in rows {
        println!(
            "{:<32} {:<6} {:<20} {:<12} {}",
            l["volume"].as_str().unwrap_or("?"),
            l["kind"].as_str().unwrap_or("?"),
            l["host"].as_str().unwrap_or("?"),
            l["reason"].as_str().unwrap_or("?"),
            l["since"].as_str().unwrap_or("?"),
        );
    }
}

async fn run(cli: Cli) -> Res<u8> {
    let j = cli.json;
    let out = |v: &Value, human: &dyn Fn(&Value)| {
        if j {
            println!("{}", pretty(v));
        } else {
            human(v);
        }
    };
    // Offline commands need no master.
    match &cli.cmd {
        Cmd::Policy {
            cmd: PolicyCmd::Check { name, files },
        } => return check_files(name.clone(), files).map(|()| 0),
        Cmd::Global {
            cmd: GlobalCmd::Check { file },
        } => {
            let g = GlobalConfig::from_json(&read(file)?)
                .map_err(|e| Fail::new(1, format!("{}: {e}", file.display())))?;
            println!("{}", serde_json::to_string_pretty(&g).unwrap_or_default());
            return Ok(0);
        }
        Cmd::Runtime {
            cmd: FileCmd::Check { file },
        } => {
            let r = RuntimeOptions::from_json(&read(file)?)
                .map_err(|e| Fail::new(1, format!("{}: {e}", file.display())))?;
            println!("{}", serde_json::to_string_pretty(&r).unwrap_or_default());
            return Ok(0);
        }
        _ => {}
    }
    let c = Client::new(&cli.master)?;
    match cli.cmd {
        Cmd::Check { repair } => {
            let method = if repair { Method::POST } else { Method::GET };
            let got = c.call(method, "/v1/check", None).await?;
            let report: volcore::CheckReport =
                serde_json::from_value(got.clone()).map_err(|e| {
                    Fail::new(
                        1,
                        format!("volmaster sent a report volcli cannot read: {e}"),
                    )
                })?;
            out(&got, &|_| print!("{}", report.render()));
            return Ok(if report.remaining() == 0 && report.unchecked.is_empty() {
                0
            } else {
                4
            });
        }
        Cmd::Global { cmd } => match cmd {
            GlobalCmd::Upload => {
                let v = c
                    .call(Method::PUT, "/v1/global", Some(stdin_json()?))
                    .await?;
                out(&v, &|_| println!("global configuration uploaded"));
            }
            GlobalCmd::Get => {
                let v = c.call(Method::GET, "/v1/global", None).await?;
                println!("{}", pretty(&v));
            }
            GlobalCmd::Check { .. } => {}
        },
        Cmd::Policy { cmd } => match cmd {
            PolicyCmd::Upload { name } => {
                PolicyName::new(&name).map_err(|e| Fail::usage(e.to_string()))?;
                let v = c
                    .call(
                        Method::PUT,
                        &format!("/v1/policies/{}", seg(&name)),
                        Some(stdin_json()?),
                    )
                    .await?;
                out(&v, &|v| {
                    println!("policy {name} uploaded as revision {}", v["revision"])
                });
            }
            PolicyCmd::Get { name } => {
                PolicyName::new(&name).map_err(|e| Fail::usage(e.to_string()))?;
                let v = c
                    .call(Method::GET, &format!("/v1/policies/{}", seg(&name)), None)
                    .await?;
                println!("{}", pretty(&v));
            }
            PolicyCmd::List => {
                let v = c.call(Method::GET, "/v1/policies", None).await?;
                out(&v, &|v| {
                    for p in v.as_array().into_iter().flatten() {
                        println!("{}", p["name"].as_str().unwrap_or("?"));
                    }
                });
            }
            PolicyCmd::Delete { name, force } => {
                PolicyName::new(&name).map_err(|e| Fail::usage(e.to_string()))?;
                let q = if force { "?force=true" } else { "" };
                c.call(
                    Method::DELETE,
                    &format!("/v1/policies/{}{q}", seg(&name)),
                    None,
                )
                .await?;
                out(&json!({"deleted": name}), &|_| {
                    println!("policy {name} deleted")
                });
            }
            PolicyCmd::History { cmd } => match cmd {
                HistoryCmd::List { name } => {
                    PolicyName::new(&name).map_err(|e| Fail::usage(e.to_string()))?;
                    let v = c
                        .call(
                            Method::GET,
                            &format!("/v1/policies/{}/revisions", seg(&name)),
                            None,
                        )
                        .await?;
                    out(&v, &|v| {
                        for r in v.as_array().into_iter().flatten() {
                            println!("{r}");
                        }
                    });
                }
                HistoryCmd::Get { name, revision } => {
                    PolicyName::new(&name).map_err(|e| Fail::usage(e.to_string()))?;
                    let v = c
                        .call(
                            Method::GET,
                            &format!("/v1/policies/{}/revisions/{revision}", seg(&name)),
                            None,
                        )
                        .await?;
                    out(&v, &|v| println!("{}", pretty(&v["policy"])));
                }
            },
            PolicyCmd::Watch => {
                use futures::StreamExt;
                let resp = c.send(Method::GET, "/v1/watch/policies", None).await?;
                if !resp.status().is_success() {
                    return Err(Fail::new(
                        1,
                        format!("volmaster answered {}", resp.status()),
                    ));
                }
                let mut stream = resp.bytes_stream();
                let mut buf = Vec::new();
                while let Some(chunk) = stream.next().await {
                    let chunk =
                        chunk.map_err(|e| Fail::new(1, format!("watch stream broke: {e}")))?;
                    buf.extend_from_slice(&chunk);
                    while let Some(pos) = buf.iter().position(|b| *b == b'\n') {
                        let line: Vec<u8> = buf.drain(..=pos).collect();
                        let Ok(v) = serde_json::from_slice::<Value>(&line) else {
                            continue;
                        };
                        if j {
                            println!("{}", serde_json::to_string(&v).unwrap_or_default());
                        } else if let (Some(p), Some(r)) =
                            (v["policy"].as_str(), v["revision"].as_u64())
                        {
                            println!("{p}\t{r}");
                        }
                        let _ = std::io::stdout().flush();
                    }
                }
                return Err(Fail::new(1, "volmaster closed the watch"));
            }
            PolicyCmd::Check { .. } => {}
        },
        Cmd::Volume { cmd } => return volume(&c, cmd, &out).await,
        Cmd::Use { cmd } => return use_cmd(&c, cmd, j).await,
        Cmd::Runtime { .. } => {}
    }
    Ok(0)
}

async fn volume(c: &Client, cmd: VolumeCmd, out: &Printer<'_>) -> Res<u8> {
    match cmd {
        VolumeCmd::Create { volume, opts } => {
            let v = parse_vref(&volume)?;
            let mut options = BTreeMap::new();
            for o in opts {
                let (k, val) = o
                    .split_once('=')
                    .ok_or_else(|| Fail::usage(format!("--opt {o:?} must be key=value")))?;
                options.insert(k.to_owned(), val.to_owned());
            }
            let body = serde_json::to_vec(&json!({"volume": v.to_string(), "options": options}))
                .unwrap_or_default();
            let got = c.call(Method::POST, "/v1/volumes", Some(body)).await?;
            out(&got, &|_| println!("volume {v} created"));
        }
        VolumeCmd::Get { volume } => {
            let v = parse_vref(&volume)?;
            let got = c.call(Method::GET, &vpath(&v), None).await?;
            println!("{}", pretty(&got));
        }
        VolumeCmd::List { policy } => {
            let path = match &policy {
                Some(p) => {
                    PolicyName::new(p).map_err(|e| Fail::usage(e.to_string()))?;
                    format!("/v1/volumes?policy={}", seg(p))
                }
                None => "/v1/volumes".to_owned(),
            };
            let got = c.call(Method::GET, &path, None).await?;
            out(&got, &|v| {
                for vol in v.as_array().into_iter().flatten() {
                    let (p, n) = (
                        vol["policy"].as_str().unwrap_or("?"),
                        vol["name"].as_str().unwrap_or("?"),
                    );
                    if policy.is_some() {
                        println!("{n}");
                    } else {
                        println!("{p}/{n}");
                    }
                }
            });
        }
        VolumeCmd::ListAll => {
            let got = c.call(Method::GET, "/v1/volumes", None).await?;
            out(&got, &|v| {
                for vol in v.as_array().into_iter().flatten() {
                    println!(
                        "{}/{}",
                        vol["policy"].as_str().unwrap_or("?"),
                        vol["name"].as_str().unwrap_or("?")
                    );
                }
            });
        }
        VolumeCmd::Remove {
            volume,
            force,
            timeout,
        } => {
            let v = parse_vref(&volume)?;
            let mut q = Vec::new();
            if force {
                q.push("force=true".to_owned());
            }
            if let Some(t) = timeout {
                volcore::size::parse_duration(&t)
                    .map_err(|e| Fail::usage(format!("--timeout: {e}")))?;
                q.push(format!("timeout={}", t.replace(' ', "")));
            }
            let qs = if q.is_empty() {
                String::new()
            } else {
                format!("?{}", q.join("&"))
            };
            c.call(Method::DELETE, &format!("{}{qs}", vpath(&v)), None)
                .await?;
            out(&json!({"removed": v.to_string()}), &|_| {
                println!("volume {v} removed")
            });
        }
        VolumeCmd::ForceRemove { volume } => {
            let v = parse_vref(&volume)?;
            c.call(Method::DELETE, &format!("{}/record", vpath(&v)), None)
                .await?;
            out(&json!({"removed_record": v.to_string()}), &|_| {
                println!("record of volume {v} removed (storage kept)")
            });
        }
        VolumeCmd::Runtime { cmd } => match cmd {
            RuntimeCmd::Get { volume } => {
                let v = parse_vref(&volume)?;
                let got = c
                    .call(Method::GET, &format!("{}/runtime", vpath(&v)), None)
                    .await?;
                println!("{}", pretty(&got));
            }
            RuntimeCmd::Upload { volume } => {
                let v = parse_vref(&volume)?;
                let got = c
                    .call(
                        Method::PUT,
                        &format!("{}/runtime", vpath(&v)),
                        Some(stdin_json()?),
                    )
                    .await?;
                out(&got, &|_| println!("runtime options of {v} updated"));
            }
        },
        VolumeCmd::Snapshot { cmd } => match cmd {
            SnapshotCmd::Take { volume } => {
                let v = parse_vref(&volume)?;
                let got = c
                    .call(Method::POST, &format!("{}/snapshots", vpath(&v)), None)
                    .await?;
                out(&got, &|g| {
                    println!("{}", g["snapshot"].as_str().unwrap_or("?"))
                });
            }
            SnapshotCmd::List { volume } => {
                let v = parse_vref(&volume)?;
                let got = c
                    .call(Method::GET, &format!("{}/snapshots", vpath(&v)), None)
                    .await?;
                out(&got, &|g| {
                    for s in g.as_array().into_iter().flatten() {
                        println!("{}", s.as_str().unwrap_or("?"));
                    }
                });
            }
            SnapshotCmd::Copy {
                volume,
                snapshot,
                new_volume,
            } => {
                let v = parse_vref(&volume)?;
                if new_volume.contains('/') {
                    return Err(Fail::usage(format!(
                        "the new volume {new_volume:?} is a name within {}, without '/'",
                        v.policy
                    )));
                }
                let body = serde_json::to_vec(&json!({"snapshot": snapshot, "target": new_volume}))
                    .unwrap_or_default();
                let got = c
                    .call(Method::POST, &format!("{}/copy", vpath(&v)), Some(body))
                    .await?;
                out(&got, &|_| println!("{}/{new_volume}", v.policy));
            }
        },
    }
    Ok(0)
}

async fn use_cmd(c: &Client, cmd: UseCmd, j: bool) -> Res<u8> {
    match cmd {
        UseCmd::List { kind } => {
            let path = match kind.as_deref() {
                None => "/v1/locks".to_owned(),
                Some(k @ ("mount" | "op")) => format!("/v1/locks?kind={k}"),
                Some(other) => {
                    return Err(Fail::usage(format!("--kind {other}: expected mount or op")))
                }
            };
            let got = c.call(Method::GET, &path, None).await?;
            print_locks(&got, j);
        }
        UseCmd::Get { volume } => {
            let v = parse_vref(&volume)?;
            let got = c
                .call(
                    Method::GET,
                    &format!("/v1/locks/{}/{}", v.policy, v.volume),
                    None,
                )
                .await?;
            if got.as_array().is_some_and(Vec::is_empty) {
                return Err(Fail::new(3, format!("volume {v} is not locked")));
            }
            print_locks(&got, j);
        }
        UseCmd::ForceRemove { volume } => {
            let v = parse_vref(&volume)?;
            let got = c
                .call(
                    Method::DELETE,
                    &format!("/v1/locks/{}/{}", v.policy, v.volume),
                    None,
                )
                .await?;
            if j {
                println!("{}", pretty(&got));
            } else {
                let n = got["removed"].as_array().map_or(0, Vec::len);
                println!("removed {n} lock(s) of {v}");
            }
        }
        UseCmd::Exec { volume, command } => return exec(c, &volume, &command).await,
    }
    Ok(0)
}

/// The maintenance session's TTL: the locks outlive a dead volcli by at most this.
const SESSION_TTL: Duration = Duration::from_secs(10);
/// How often the session is renewed.
const RENEW_EVERY: Duration = Duration::from_secs(3);
/// The command is stopped this long before the session could expire unrenewed.
const SESSION_MARGIN: Duration = Duration::from_secs(2);

/// Kills a whole process group (the command and everything it started).
fn kill_group(pgid: u32, sig: nix::sys::signal::Signal) {
    if let Ok(p) = i32::try_from(pgid) {
        let _ = nix::sys::signal::killpg(nix::unistd::Pid::from_raw(p), sig);
    }
}

/// Holds the volume's maintenance locks (a renewed session) while `command` runs; its
/// output and exit status pass through. The command runs in its own process group; every
/// request has a timeout; if the session cannot be renewed before it would expire (the
/// locks would go), or volcli is interrupted, the whole group is killed and volcli exits
/// non-zero saying why — the command never outlives its locks.
async fn exec(c: &Client, volume: &str, command: &[String]) -> Res<u8> {
    let v = parse_vref(volume)?;
    let host = volcore_daemons::default_host();
    let wait = Duration::from_secs(600);
    let body = serde_json::to_vec(&json!({
        "volume": v.to_string(),
        "host": host.as_str(),
        "ttl": volcore::size::format_duration(SESSION_TTL),
        "wait": volcore::size::format_duration(wait),
    }))
    .unwrap_or_default();
    let got = c
        .call_within(
            Method::POST,
            "/v1/maintenance",
            Some(body),
            wait + Duration::from_secs(30),
        )
        .await?;
    let started = tokio::time::Instant::now();
    let session = got["session"].as_str().unwrap_or_default().to_owned();
    let path = format!("/v1/maintenance/{}", seg(&session));
    // Ending the session is a courtesy (its locks expire with it anyway): a master that
    // does not answer gets a second, not more.
    let end = |why: Option<String>| async {
        let patience = if why.is_some() { 1 } else { 5 };
        if let Err(e) = c
            .call_within(Method::DELETE, &path, None, Duration::from_secs(patience))
            .await
        {
            eprintln!(
                "volcli: could not end the maintenance session ({}); its locks expire within {}s",
                e.msg,
                SESSION_TTL.as_secs()
            );
        }
        why
    };
    let mut child = match tokio::process::Command::new(&command[0])
        .args(&command[1..])
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(ch) => ch,
        Err(e) => {
            end(None).await;
            return Err(Fail::new(1, format!("cannot run {:?}: {e}", command[0])));
        }
    };
    let pgid = child.id().unwrap_or(0);
    // The session is good until `expires` (counted from when the last renewal that
    // succeeded was sent); the command must stop before that.
    let mut expires = started + SESSION_TTL;
    let mut next = started + RENEW_EVERY;
    let mut interrupt = Box::pin(volcore_daemons::shutdown_signal());
    let stop = loop {
        let deadline = expires - SESSION_MARGIN;
        tokio::select! {
            status = child.wait() => {
                // The command is done; whatever it left in its group goes with it.
                kill_group(pgid, nix::sys::signal::Signal::SIGKILL);
                end(None).await;
                return match status {
                    Ok(s) => Ok(s.code().map_or(1, |c| u8::try_from(c).unwrap_or(1))),
                    Err(e) => Err(Fail::new(1, format!("waiting for the command: {e}"))),
                };
            }
            () = &mut interrupt => {
                break format!("interrupted; the command ({:?}) was stopped", command[0]);
            }
            () = tokio::time::sleep_until(deadline) => {
                break format!(
                    "the maintenance session of {v} could not be renewed before it would expire (the store or volmaster is unreachable); the command ({:?}) and everything it started were killed so that it never runs without the volume's locks",
                    command[0]
                );
            }
            () = tokio::time::sleep_until(next) => {
                let sent = tokio::time::Instant::now();
                // Never wait past the point where the command must be stopped.
                let limit = deadline.saturating_duration_since(sent).min(RENEW_EVERY);
                match c.call_within(Method::PUT, &path, None, limit).await {
                    Ok(_) => {
                        expires = sent + SESSION_TTL;
                        next = sent + RENEW_EVERY;
                    }
                    Err(e) if e.msg.contains("does not exist") || e.msg.contains("has expired") => {
                        break format!("the maintenance locks of {v} are gone ({}); the command ({:?}) and everything it started were killed", e.msg, command[0]);
                    }
                    Err(e) => {
                        eprintln!("volcli: renewing the maintenance session failed ({}); retrying", e.msg);
                        next = tokio::time::Instant::now() + Duration::from_millis(500);
                    }
                }
            }
        }
    };
    kill_group(pgid, nix::sys::signal::Signal::SIGKILL);
    let _ = child.wait().await;
    let why = end(Some(stop)).await.unwrap_or_default();
    Err(Fail::new(1, format!("volcli: {why}")))
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli).await {
        Ok(code) => ExitCode::from(code),
        Err(f) => {
            if !f.msg.is_empty() {
                eprintln!("{}", f.msg);
            }
            ExitCode::from(f.code)
        }
    }
}
