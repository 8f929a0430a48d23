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
use serde::Serialize;
use serde_json::{json, Value};
use volcore::{
    GlobalConfig, HostName, LockKind, Policy, PolicyName, RuntimeOptions, VolumeName, VolumeRef,
};
use volcore_api::types::{MaintenanceRequest, PolicyEvent};
use volcore_api::{Client, ClientError, ErrorCode, RemoveOptions, TlsFiles};

mod config;

#[derive(Parser)]
#[command(name = "volcli", version, about = "volcore's operator CLI")]
struct Cli {
    /// volmaster's URL [default: the config file's, else http://127.0.0.1:9005].
    #[arg(long, global = true, env = "VOLCLI_MASTER")]
    master: Option<String>,
    /// The CA certificate (PEM) that signed volmaster's certificate (https://).
    #[arg(long, global = true, env = "VOLCLI_CACERT")]
    cacert: Option<PathBuf>,
    /// This client's certificate (PEM): who volmaster takes you for.
    #[arg(long, global = true, env = "VOLCLI_CERT")]
    cert: Option<PathBuf>,
    /// This client's private key (PEM).
    #[arg(long, global = true, env = "VOLCLI_KEY")]
    key: Option<PathBuf>,
    /// Config file (TOML: master, cacert, cert, key) [default:
    /// $XDG_CONFIG_HOME/volcore/volcli.toml, when it exists].
    #[arg(long, global = true, env = "VOLCLI_CONFIG")]
    config: Option<PathBuf>,
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
    /// Who volmaster takes you for: the identity of your client certificate.
    Whoami,
    /// The supervisors.
    Supervisor {
        #[command(subcommand)]
        cmd: SupervisorCmd,
    },
    /// Roles of certificate identities (admin): reader, operator, admin.
    Role {
        #[command(subcommand)]
        cmd: RoleCmd,
    },
    /// Tenants: policies grouped with the identities that may use them.
    Tenant {
        #[command(subcommand)]
        cmd: TenantCmd,
    },
    /// The audit trail of mutating and refused requests (admin).
    Audit {
        #[command(subcommand)]
        cmd: AuditCmd,
    },
}

#[derive(Subcommand)]
enum SupervisorCmd {
    /// Which volsupervisor leads, since when, and the standbys.
    Status,
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Entries, oldest first.
    List {
        /// Only entries at or after this: a time (2026-12-04T10:00:00Z) or a duration
        /// back from now (1h).
        #[arg(long)]
        since: Option<String>,
        /// At most this many, the newest.
        #[arg(long)]
        limit: Option<usize>,
    },
}

#[derive(Subcommand)]
enum RoleCmd {
    /// Bind a subject to a role: SUBJECT is user:CN (a certificate's common name) or
    /// group:NAME (its O, OU or a URI SAN); ROLE is reader, operator or admin.
    Grant { subject: String, role: String },
    /// Remove a subject's role.
    Revoke { subject: String },
    /// Every subject and its role.
    List,
}

#[derive(Subcommand)]
enum TenantCmd {
    /// Create or replace a tenant (JSON on standard input:
    /// {"policies": ["policy1"], "members": ["user:alice", "group:ops"]}).
    Upload { name: String },
    /// Show a tenant (admins and its members).
    Get { name: String },
    /// List tenants.
    List,
    /// Delete a tenant (its policies and their volumes stay).
    Delete { name: String },
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
    List {
        policy: Option<String>,
        /// Only volumes unused past their policy's reclaim period, with when the supervisor
        /// removes (or reports) each.
        #[arg(long)]
        stale: bool,
    },
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
    /// Ask the leading volsupervisor for a snapshot now (the volume's runtime must say
    /// "signal": true); it counts toward pruning like a scheduled one.
    Signal { volume: String },
    /// Run --pre (e.g. flush a database), take a snapshot, run --post; each step's status
    /// is reported, and --post runs even when an earlier step failed. Commands run with
    /// `sh -c` on this machine. Exit status: 0 when every step succeeded.
    Run {
        volume: String,
        /// Command to run before the snapshot; when it fails, no snapshot is taken.
        #[arg(long)]
        pre: Option<String>,
        /// Command to run after the snapshot, whatever became of it.
        #[arg(long)]
        post: Option<String>,
    },
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

fn subject_arg(s: &str) -> Res<volcore::Subject> {
    volcore::Subject::new(s).map_err(|e| Fail::usage(e.to_string()))
}

fn tenant_arg(s: &str) -> Res<volcore::TenantName> {
    volcore::TenantName::new(s).map_err(|e| Fail::usage(e.to_string()))
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

fn policy_name(s: &str) -> Res<PolicyName> {
    PolicyName::new(s).map_err(|e| Fail::usage(e.to_string()))
}

/// A client error as volcli reports it: not found exits 3, a conflict or a lock 4, no
/// certificate or not allowed 5.
impl From<ClientError> for Fail {
    fn from(e: ClientError) -> Self {
        let code = match e.status() {
            Some(404) => 3,
            Some(409 | 423) => 4,
            Some(401 | 403) => 5,
            _ => 1,
        };
        let msg = match &e {
            ClientError::Unreachable { .. } => {
                format!("{e} (is it running? set --master or VOLCLI_MASTER)")
            }
            _ => e.to_string(),
        };
        Fail::new(code, msg)
    }
}

/// A typed answer as JSON, for `--json` and the human formatters.
fn value<T: Serialize>(v: &T) -> Value {
    serde_json::to_value(v).unwrap_or_default()
}

/// The client the flags, environment and config file describe.
fn connect(cli: &Cli) -> Res<Client> {
    let file = config::load(cli.config.as_deref()).map_err(Fail::usage)?;
    let tls = TlsFiles {
        ca: cli.cacert.clone(),
        cert: cli.cert.clone(),
        key: cli.key.clone(),
    };
    let (master, tls) = config::resolve(cli.master.clone(), tls, file);
    Client::with_tls(&master, &tls).map_err(|e| match e {
        ClientError::BadUrl { .. } => Fail::usage(format!("--master {e}")),
        ClientError::TlsFiles(e) => Fail::usage(e.to_string()),
        e => Fail::from(e),
    })
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
    let c = connect(&cli)?;
    match cli.cmd {
        Cmd::Role { cmd } => match cmd {
            RoleCmd::Grant { subject, role } => {
                let s = subject_arg(&subject)?;
                let r: volcore::Role = role
                    .parse()
                    .map_err(|e: volcore::AuthError| Fail::usage(e.to_string()))?;
                let m = c.grant_role(&s, r).await?;
                out(&value(&m), &|_| println!("{s} is now {r}"));
            }
            RoleCmd::Revoke { subject } => {
                let s = subject_arg(&subject)?;
                let m = c.revoke_role(&s).await?;
                out(&value(&m), &|_| println!("{s} has no role now"));
            }
            RoleCmd::List => {
                let m = c.roles().await?;
                out(&value(&m), &|_| {
                    for (s, r) in &m.bindings {
                        println!("{s}\t{r}");
                    }
                });
            }
        },
        Cmd::Tenant { cmd } => match cmd {
            TenantCmd::Upload { name } => {
                let t = tenant_arg(&name)?;
                let got = c.put_tenant(&t, stdin_json()?).await?;
                out(&value(&got), &|_| {
                    println!(
                        "tenant {t} stored: {} policies, {} members",
                        got.policies.len(),
                        got.members.len()
                    )
                });
            }
            TenantCmd::Get { name } => {
                let t = tenant_arg(&name)?;
                println!("{}", pretty(&value(&c.tenant(&t).await?)));
            }
            TenantCmd::List => {
                let all = c.tenants().await?;
                out(&value(&all), &|_| {
                    for t in &all {
                        let name = t.name.as_ref().map(|n| n.as_str()).unwrap_or("?");
                        let ps: Vec<&str> = t.policies.iter().map(|p| p.as_str()).collect();
                        println!("{name}\t{}", ps.join(","));
                    }
                });
            }
            TenantCmd::Delete { name } => {
                c.delete_tenant(&tenant_arg(&name)?).await?;
                out(&serde_json::json!({"deleted": name}), &|_| {
                    println!("tenant {name} deleted")
                });
            }
        },
        Cmd::Audit {
            cmd: AuditCmd::List { since, limit },
        } => {
            let all = c.audit(since.as_deref(), limit).await?;
            out(&value(&all), &|_| {
                for e in &all {
                    println!(
                        "{}  {:<7} {:>3}  {:<24} {} {}",
                        e.time, e.outcome, e.status, e.who, e.method, e.path
                    );
                }
            });
        }
        Cmd::Supervisor {
            cmd: SupervisorCmd::Status,
        } => {
            let st = c.supervisor_status().await?;
            out(&value(&st), &|_| {
                match &st.leader {
                    Some(l) => println!(
                        "leader:  {} (instance {}, version {}) since {}",
                        l.host,
                        l.instance,
                        l.version,
                        humantime::format_rfc3339_seconds(l.since)
                    ),
                    None => {
                        println!("leader:  none (no volsupervisor leads; snapshots are not taken)")
                    }
                }
                for s in &st.standbys {
                    println!(
                        "standby: {} (instance {}, version {}) running since {}",
                        s.host,
                        s.instance,
                        s.version,
                        humantime::format_rfc3339_seconds(s.since)
                    );
                }
            });
        }
        Cmd::Whoami => {
            let w = c.whoami().await?;
            out(&value(&w), &|_| match &w.identity {
                Some(i) if i.groups.is_empty() => println!("{}", i.name),
                Some(i) => println!("{} (groups: {})", i.name, i.groups.join(", ")),
                None if w.tls => println!("anonymous (no client certificate)"),
                None => println!("anonymous (plain HTTP)"),
            });
        }
        Cmd::Check { repair } => {
            let report = c.check(repair).await?;
            out(&value(&report), &|_| print!("{}", report.render()));
            return Ok(if report.remaining() == 0 && report.unchecked.is_empty() {
                0
            } else {
                4
            });
        }
        Cmd::Global { cmd } => match cmd {
            GlobalCmd::Upload => {
                let v = value(&c.set_global(stdin_json()?).await?);
                out(&v, &|_| println!("global configuration uploaded"));
            }
            GlobalCmd::Get => {
                println!("{}", pretty(&value(&c.global().await?)));
            }
            GlobalCmd::Check { .. } => {}
        },
        Cmd::Policy { cmd } => match cmd {
            PolicyCmd::Upload { name } => {
                let p = policy_name(&name)?;
                let v = value(&c.upload_policy(&p, stdin_json()?).await?);
                out(&v, &|v| {
                    println!("policy {name} uploaded as revision {}", v["revision"])
                });
            }
            PolicyCmd::Get { name } => {
                let p = policy_name(&name)?;
                println!("{}", pretty(&value(&c.policy(&p).await?)));
            }
            PolicyCmd::List => {
                let v = value(&c.policies().await?);
                out(&v, &|v| {
                    for p in v.as_array().into_iter().flatten() {
                        println!("{}", p["name"].as_str().unwrap_or("?"));
                    }
                });
            }
            PolicyCmd::Delete { name, force } => {
                c.delete_policy(&policy_name(&name)?, force).await?;
                out(&json!({"deleted": name}), &|_| {
                    println!("policy {name} deleted")
                });
            }
            PolicyCmd::History { cmd } => match cmd {
                HistoryCmd::List { name } => {
                    let v = value(&c.policy_revisions(&policy_name(&name)?).await?);
                    out(&v, &|v| {
                        for r in v.as_array().into_iter().flatten() {
                            println!("{r}");
                        }
                    });
                }
                HistoryCmd::Get { name, revision } => {
                    let p = policy_name(&name)?;
                    let v = value(&c.policy_revision(&p, revision).await?);
                    out(&v, &|v| println!("{}", pretty(&v["policy"])));
                }
            },
            PolicyCmd::Watch => {
                use futures::StreamExt;
                let stream = c.watch_policies(None).await?;
                futures::pin_mut!(stream);
                while let Some(ev) = stream.next().await {
                    let ev = match ev {
                        Ok(ev) => ev,
                        Err(e @ ClientError::Decode { .. }) => {
                            eprintln!("volcli: ignoring a watch line it cannot read: {e}");
                            continue;
                        }
                        Err(e) => return Err(Fail::new(1, format!("watch stream broke: {e}"))),
                    };
                    if j {
                        println!("{}", serde_json::to_string(&ev).unwrap_or_default());
                    } else if let PolicyEvent::Uploaded { policy, revision } = &ev {
                        println!("{policy}\t{revision}");
                    }
                    let _ = std::io::stdout().flush();
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
            let got = value(&c.create(&v, &options).await?);
            out(&got, &|_| println!("volume {v} created"));
        }
        VolumeCmd::Get { volume } => {
            let v = parse_vref(&volume)?;
            println!("{}", pretty(&value(&c.volume(&v).await?)));
        }
        VolumeCmd::List {
            policy,
            stale: true,
        } => {
            let p = policy.as_deref().map(policy_name).transpose()?;
            let got = c.stale_volumes(p.as_ref()).await?;
            out(&value(&got), &|_| {
                let t = |t: std::time::SystemTime| humantime::format_rfc3339_seconds(t).to_string();
                for s in &got {
                    let what = match s.action {
                        volcore::policy::ReclaimAction::Remove => "removed",
                        volcore::policy::ReclaimAction::Report => "reported",
                    };
                    println!(
                        "{}  unused since {}  stale since {}  {what} at {}",
                        s.volume,
                        t(s.unused_since),
                        t(s.stale_since),
                        t(s.due_at)
                    );
                }
            });
        }
        VolumeCmd::List {
            policy,
            stale: false,
        } => {
            let p = policy.as_deref().map(policy_name).transpose()?;
            let got = value(&c.volumes(p.as_ref()).await?);
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
            let got = value(&c.volumes(None).await?);
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
            let timeout = timeout
                .map(|t| volcore::size::parse_duration(&t))
                .transpose()
                .map_err(|e| Fail::usage(format!("--timeout: {e}")))?;
            c.remove(&v, RemoveOptions { force, timeout }).await?;
            out(&json!({"removed": v.to_string()}), &|_| {
                println!("volume {v} removed")
            });
        }
        VolumeCmd::ForceRemove { volume } => {
            let v = parse_vref(&volume)?;
            c.remove_record(&v).await?;
            out(&json!({"removed_record": v.to_string()}), &|_| {
                println!("record of volume {v} removed (storage kept)")
            });
        }
        VolumeCmd::Runtime { cmd } => match cmd {
            RuntimeCmd::Get { volume } => {
                let v = parse_vref(&volume)?;
                println!("{}", pretty(&value(&c.runtime(&v).await?)));
            }
            RuntimeCmd::Upload { volume } => {
                let v = parse_vref(&volume)?;
                let got = value(&c.set_runtime(&v, stdin_json()?).await?);
                out(&got, &|_| println!("runtime options of {v} updated"));
            }
        },
        VolumeCmd::Snapshot { cmd } => match cmd {
            SnapshotCmd::Take { volume } => {
                let v = parse_vref(&volume)?;
                let got = value(&c.snapshot(&v).await?);
                out(&got, &|g| {
                    println!("{}", g["snapshot"].as_str().unwrap_or("?"))
                });
            }
            SnapshotCmd::List { volume } => {
                let v = parse_vref(&volume)?;
                let got = value(&c.snapshots(&v).await?);
                out(&got, &|g| {
                    for s in g.as_array().into_iter().flatten() {
                        println!("{}", s.as_str().unwrap_or("?"));
                    }
                });
            }
            SnapshotCmd::Signal { volume } => {
                let v = parse_vref(&volume)?;
                let got = c.signal_snapshot(&v).await?;
                out(&value(&got), &|_| {
                    println!("asked the supervisor for snapshot {} of {v}", got.snapshot)
                });
            }
            SnapshotCmd::Run { volume, pre, post } => {
                let v = parse_vref(&volume)?;
                return snapshot_run(c, &v, pre.as_deref(), post.as_deref(), out).await;
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
                let target =
                    VolumeName::new(&new_volume).map_err(|e| Fail::usage(e.to_string()))?;
                let got = value(&c.copy(&v, &snapshot, &target).await?);
                out(&got, &|_| println!("{}/{new_volume}", v.policy));
            }
        },
    }
    Ok(0)
}

/// One step of `volume snapshot run`.
#[derive(Serialize)]
struct Step {
    step: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    command: Option<String>,
    ok: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    exit: Option<i32>,
    detail: String,
}

async fn run_hook(step: &'static str, cmd: &str) -> Step {
    let res = tokio::process::Command::new("sh")
        .arg("-c")
        .arg(cmd)
        .stdin(std::process::Stdio::null())
        .kill_on_drop(true)
        .status()
        .await;
    let (ok, exit, detail) = match res {
        Ok(s) if s.success() => (true, s.code(), "succeeded".to_owned()),
        Ok(s) => (
            false,
            s.code(),
            match s.code() {
                Some(c) => format!("exited with status {c}"),
                None => "killed by a signal".to_owned(),
            },
        ),
        Err(e) => (false, None, format!("could not run sh: {e}")),
    };
    Step {
        step,
        command: Some(cmd.to_owned()),
        ok,
        exit,
        detail,
    }
}

async fn snapshot_run(
    c: &Client,
    v: &VolumeRef,
    pre: Option<&str>,
    post: Option<&str>,
    out: &Printer<'_>,
) -> Res<u8> {
    let mut steps = Vec::new();
    let mut snapshot = None;
    let mut code = 0u8;
    let pre_ok = match pre {
        Some(cmd) => {
            let s = run_hook("pre", cmd).await;
            let ok = s.ok;
            steps.push(s);
            ok
        }
        None => true,
    };
    if pre_ok {
        match c.snapshot(v).await {
            Ok(t) => {
                steps.push(Step {
                    step: "snapshot",
                    command: None,
                    ok: true,
                    exit: None,
                    detail: format!("took {}", t.snapshot),
                });
                snapshot = Some(t.snapshot);
            }
            Err(e) => {
                let detail = e.to_string();
                code = Fail::from(e).code;
                steps.push(Step {
                    step: "snapshot",
                    command: None,
                    ok: false,
                    exit: None,
                    detail,
                });
            }
        }
    } else {
        steps.push(Step {
            step: "snapshot",
            command: None,
            ok: false,
            exit: None,
            detail: "skipped: the pre command failed".to_owned(),
        });
    }
    if let Some(cmd) = post {
        steps.push(run_hook("post", cmd).await);
    }
    if code == 0 && steps.iter().any(|s| !s.ok) {
        code = 1;
    }
    let report =
        json!({"volume": v.to_string(), "snapshot": snapshot, "ok": code == 0, "steps": &steps});
    out(&report, &|_| {
        for s in &steps {
            let what = match &s.command {
                Some(c) => format!("{} ({c})", s.step),
                None => s.step.to_owned(),
            };
            println!(
                "{:<4} {what}: {}",
                if s.ok { "ok" } else { "FAIL" },
                s.detail
            );
        }
    });
    Ok(code)
}

async fn use_cmd(c: &Client, cmd: UseCmd, j: bool) -> Res<u8> {
    match cmd {
        UseCmd::List { kind } => {
            let kind = match kind.as_deref() {
                None => None,
                Some(k) => Some(
                    LockKind::parse(k)
                        .ok_or_else(|| Fail::usage(format!("--kind {k}: expected mount or op")))?,
                ),
            };
            let got = value(&c.locks(kind).await?);
            print_locks(&got, j);
        }
        UseCmd::Get { volume } => {
            let v = parse_vref(&volume)?;
            let got = value(&c.volume_locks(&v).await?);
            if got.as_array().is_some_and(Vec::is_empty) {
                return Err(Fail::new(3, format!("volume {v} is not locked")));
            }
            print_locks(&got, j);
        }
        UseCmd::ForceRemove { volume } => {
            let v = parse_vref(&volume)?;
            let got = value(&c.remove_locks(&v).await?);
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
    let wait = Duration::from_secs(600);
    let req = MaintenanceRequest {
        volume: v.to_string(),
        host: HostName::this_host().to_string(),
        ttl: Some(volcore::size::format_duration(SESSION_TTL)),
        wait: Some(volcore::size::format_duration(wait)),
    };
    let got = c
        .begin_maintenance(&req, wait + Duration::from_secs(30))
        .await?;
    let started = tokio::time::Instant::now();
    let session = got.session;
    // Ending the session is a courtesy (its locks expire with it anyway): a master that
    // does not answer gets a second, not more.
    let end = |why: Option<String>| async {
        let patience = if why.is_some() { 1 } else { 5 };
        if let Err(e) = c
            .end_maintenance(&session, Duration::from_secs(patience))
            .await
        {
            eprintln!(
                "volcli: could not end the maintenance session ({e}); its locks expire within {}s",
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
    let mut interrupt = Box::pin(interrupted());
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
                match c.renew_maintenance(&session, limit).await {
                    Ok(_) => {
                        expires = sent + SESSION_TTL;
                        next = sent + RENEW_EVERY;
                    }
                    Err(e) if e.code() == Some(ErrorCode::SessionGone) => {
                        break format!("the maintenance locks of {v} are gone ({e}); the command ({:?}) and everything it started were killed", command[0]);
                    }
                    Err(e) => {
                        eprintln!("volcli: renewing the maintenance session failed ({e}); retrying");
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

/// Resolves on SIGINT or SIGTERM.
async fn interrupted() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
        }
        Err(_) => {
            let _ = tokio::signal::ctrl_c().await;
        }
    }
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
