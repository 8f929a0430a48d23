//! volplugin benchmark: Mount+Unmount cycles per second through the plugin socket (null
//! and local backends) with p50/p99, and the plugin's RSS when idle and with 500 mounted
//! null-backend volumes. Runs the real volplugin binary against etcd
//! (`VOLCORE_BENCH_ETCD`); `scripts/pluginbench.sh` builds it and starts etcd. Bounded:
//! a fixed number of cycles per backend.

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use volcore::kv::{KvStore, PutOpts};
use volcore::{Policy, PolicyName};
use volcore_kv::{EtcdConfig, EtcdKv};

fn call(sock: &Path, endpoint: &str, body: &Value) -> Result<Value> {
    let mut s = UnixStream::connect(sock)?;
    let b = body.to_string();
    write!(s, "POST /{endpoint} HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}", b.len())?;
    let mut out = String::new();
    s.read_to_string(&mut out)?;
    let (_, body) = out.split_once("\r\n\r\n").context("no HTTP body")?;
    let v: Value = serde_json::from_str(body)?;
    if v["Err"].as_str().is_some_and(|e| !e.is_empty()) {
        bail!("{endpoint}: {}", v["Err"]);
    }
    Ok(v)
}

fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

fn pct(v: &mut [Duration], p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i.min(v.len() - 1)].as_secs_f64() * 1e3
}

fn cycles(sock: &Path, vol: &str, n: usize) -> Result<()> {
    let mut lat = Vec::with_capacity(n);
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        call(
            sock,
            "VolumeDriver.Mount",
            &json!({"Name": vol, "ID": format!("c{i}")}),
        )?;
        call(
            sock,
            "VolumeDriver.Unmount",
            &json!({"Name": vol, "ID": format!("c{i}")}),
        )?;
        lat.push(t.elapsed());
    }
    let wall = start.elapsed();
    println!(
        "  {vol:<16} {n:>5} Mount+Unmount cycles  {:>8.1} cycles/s   p50 {:>8.3} ms   p99 {:>8.3} ms",
        n as f64 / wall.as_secs_f64(),
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let etcd = std::env::var("VOLCORE_BENCH_ETCD")
        .context("VOLCORE_BENCH_ETCD=host:port (scripts/pluginbench.sh starts etcd)")?;
    let bin = std::env::var("VOLPLUGIN_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| PathBuf::from("target/release/volplugin"));
    let work = std::env::temp_dir().join(format!("pluginbench-{}", std::process::id()));
    std::fs::create_dir_all(work.join("mnt"))?;
    let prefix = format!("/pluginbench-{}", std::process::id());
    let kv: Arc<dyn KvStore> = Arc::new(EtcdKv::connect(EtcdConfig::new([etcd.clone()])).await?);
    kv.put(
        &volcore::Keys::new(&prefix)?.global(),
        format!(r#"{{"MountPath":"{}"}}"#, work.join("mnt").display()).into_bytes(),
        PutOpts::default(),
    )
    .await?;
    for (name, json) in [
        ("nullp", r#"{"backend":"null"}"#),
        ("localp", r#"{"backend":"local","create":{"size":"64MiB"}}"#),
    ] {
        let p = Policy::from_json(&PolicyName::new(name)?, json.as_bytes())?;
        kv.put(
            &volcore::Keys::new(&prefix)?.policy(&PolicyName::new(name)?),
            p.to_json(),
            PutOpts::default(),
        )
        .await?;
    }
    let mut child = Command::new(&bin)
        .args([
            "--kv",
            &format!("etcd://{etcd}"),
            "--prefix",
            &prefix,
            "--plugin-name",
            "bench",
            "--host-label",
            "bench",
        ])
        .args([
            "--socket-dir",
            &work.display().to_string(),
            "--local-state",
            &work.join("local").display().to_string(),
            "--state-dir",
            &work.join("state").display().to_string(),
        ])
        .arg("--allow-null-backend")
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    let sock = work.join("bench.sock");
    let deadline = Instant::now() + Duration::from_secs(10);
    while UnixStream::connect(&sock).is_err() {
        if Instant::now() > deadline {
            bail!("volplugin did not come up");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    std::thread::sleep(Duration::from_millis(300));
    let pid = child.id();
    println!("volplugin RSS idle: {} KiB", rss_kib(pid));
    call(
        &sock,
        "VolumeDriver.Create",
        &json!({"Name": "nullp/cycle"}),
    )?;
    call(
        &sock,
        "VolumeDriver.Create",
        &json!({"Name": "localp/cycle"}),
    )?;
    println!("Mount+Unmount through the plugin socket (store: etcd on loopback):");
    cycles(&sock, "nullp/cycle", 500)?;
    cycles(&sock, "localp/cycle", 50)?;
    for i in 0..500 {
        call(
            &sock,
            "VolumeDriver.Create",
            &json!({"Name": format!("nullp/m{i}")}),
        )?;
        call(
            &sock,
            "VolumeDriver.Mount",
            &json!({"Name": format!("nullp/m{i}"), "ID": "c"}),
        )?;
    }
    println!(
        "volplugin RSS with 500 mounted null-backend volumes: {} KiB",
        rss_kib(pid)
    );
    for i in 0..500 {
        call(
            &sock,
            "VolumeDriver.Unmount",
            &json!({"Name": format!("nullp/m{i}"), "ID": "c"}),
        )?;
    }
    let _ = Command::new("kill")
        .args(["-TERM", &pid.to_string()])
        .status();
    let _ = child.wait();
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
