//! volcli — the operator CLI.
//!
//! This build has the offline commands only: they validate policy, runtime and global
//! configuration files exactly as the master will at upload, and print the expanded form.
//! The commands that talk to a master (upload, get, list, volume …, use …) arrive with the
//! master itself.

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use volcore::{GlobalConfig, Policy, PolicyName, RuntimeOptions};

#[derive(Parser)]
#[command(name = "volcli", version, about = "volcore's operator CLI")]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Policy files.
    Policy {
        #[command(subcommand)]
        cmd: PolicyCmd,
    },
    /// Global configuration files.
    Global {
        #[command(subcommand)]
        cmd: FileCmd,
    },
    /// Runtime option files.
    Runtime {
        #[command(subcommand)]
        cmd: FileCmd,
    },
}

#[derive(Subcommand)]
enum PolicyCmd {
    /// Validate policy files as an upload would; print each expanded policy.
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
enum FileCmd {
    /// Validate a file as an upload would; print the result.
    Check {
        /// The file (`-` for standard input).
        file: PathBuf,
    },
}

fn read(path: &Path) -> Result<Vec<u8>> {
    if path == Path::new("-") {
        let mut buf = Vec::new();
        std::io::stdin()
            .read_to_end(&mut buf)
            .context("reading standard input")?;
        return Ok(buf);
    }
    std::fs::read(path).with_context(|| format!("reading {}", path.display()))
}

fn pretty(v: &impl serde::Serialize) -> Result<String> {
    serde_json::to_string_pretty(v).context("encoding JSON")
}

fn run(cli: Cli) -> Result<bool> {
    let mut all_ok = true;
    match cli.cmd {
        Cmd::Policy {
            cmd: PolicyCmd::Check { name, files },
        } => {
            for f in &files {
                let n = match (&name, f.file_stem()) {
                    (Some(n), _) => n.clone(),
                    (None, Some(stem)) if f != Path::new("-") => {
                        stem.to_string_lossy().into_owned()
                    }
                    _ => anyhow::bail!("reading a policy from standard input needs --name"),
                };
                let checked = PolicyName::new(n)
                    .map_err(anyhow::Error::from)
                    .and_then(|n| Ok(Policy::from_json(&n, &read(f)?)?));
                match checked {
                    Ok(p) => println!("{}", pretty(&p)?),
                    Err(e) => {
                        eprintln!("{}: {e:#}", f.display());
                        all_ok = false;
                    }
                }
            }
        }
        Cmd::Global {
            cmd: FileCmd::Check { file },
        } => match GlobalConfig::from_json(&read(&file)?) {
            Ok(g) => println!("{}", pretty(&g)?),
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                all_ok = false;
            }
        },
        Cmd::Runtime {
            cmd: FileCmd::Check { file },
        } => match RuntimeOptions::from_json(&read(&file)?) {
            Ok(r) => println!("{}", pretty(&r)?),
            Err(e) => {
                eprintln!("{}: {e}", file.display());
                all_ok = false;
            }
        },
    }
    Ok(all_ok)
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(true) => ExitCode::SUCCESS,
        Ok(false) => ExitCode::from(1),
        Err(e) => {
            eprintln!("volcli: {e:#}");
            ExitCode::from(1)
        }
    }
}
