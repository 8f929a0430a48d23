//! volplugin's Docker-protocol operations through its real unix socket, with the plugin
//! in-process on etcd wrapped in a `CountingKv`, so every figure comes with the store round
//! trips the operation took: Mount+Unmount cycles/s, and Get, Path and List (220 volumes)
//! p50. Bounded: a fixed number of calls per operation. `scripts/pluginbench.sh` runs it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use volcore::kv::{KvStore, PutOpts};
use volcore::testing::{CountingKv, KvCalls};
use volcore::{Drivers, HostName, Policy, PolicyName};
use volcore_kv::{EtcdConfig, EtcdKv};
use volplugin::{run, LeaseLossAction, PluginConfig, PluginDeps};

async fn call(sock: &Path, endpoint: &str, body: &Value) -> Result<Value> {
    let mut s = tokio::net::UnixStream::connect(sock).await?;
    let b = body.to_string();
    let req = format!(
        "POST /{endpoint} HTTP/1.1\r\nHost: p\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{b}",
        b.len()
    );
    s.write_all(req.as_bytes()).await?;
    let mut out = Vec::new();
    s.read_to_end(&mut out).await?;
    let out = String::from_utf8_lossy(&out);
    let (_, body) = out.split_once("\r\n\r\n").context("no HTTP body")?;
    let v: Value = serde_json::from_str(body)?;
    if v["Err"].as_str().is_some_and(|e| !e.is_empty()) {
        bail!("{endpoint}: {}", v["Err"]);
    }
    Ok(v)
}

fn p50_ms(v: &mut [Duration]) -> f64 {
    v.sort();
    v[v.len() / 2].as_secs_f64() * 1e3
}

fn per_call(c: KvCalls, n: usize) -> String {
    let f = |x: usize| x as f64 / n as f64;
    format!(
        "store round trips per call: {:.2} (txn {:.2}, get {:.2}, list {:.2}, put {:.2}, delete {:.2})",
        f(c.total()),
        f(c.txn),
        f(c.get),
        f(c.list),
        f(c.put),
        f(c.delete)
    )
}

/// `n` calls of one endpoint; prints p50 and the round trips per call.
async fn measure(
    kv: &CountingKv,
    sock: &Path,
    label: &str,
    endpoint: &str,
    body: &Value,
    n: usize,
) -> Result<()> {
    let mut lat = Vec::with_capacity(n);
    kv.take();
    for _ in 0..n {
        let t = Instant::now();
        call(sock, endpoint, body).await?;
        lat.push(t.elapsed());
    }
    let calls = kv.take();
    println!(
        "  {label:<28} {n:>5} calls  p50 {:>7.3} ms   {}",
        p50_ms(&mut lat),
        per_call(calls, n)
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let etcd = std::env::var("VOLCORE_BENCH_ETCD")
        .context("VOLCORE_BENCH_ETCD=host:port (scripts/pluginbench.sh starts etcd)")?;
    let work = std::env::temp_dir().join(format!("pluginops-{}", std::process::id()));
    std::fs::create_dir_all(work.join("mnt"))?;
    let prefix = format!("/pluginops-{}", std::process::id());
    let etcd_kv: Arc<dyn KvStore> =
        Arc::new(EtcdKv::connect(EtcdConfig::new([etcd.clone()])).await?);
    let counting = CountingKv::new(etcd_kv);
    let kv: Arc<dyn KvStore> = Arc::new(counting.clone());
    kv.put(
        &volcore::Keys::new(&prefix)?.global(),
        format!(r#"{{"MountPath":"{}"}}"#, work.join("mnt").display()).into_bytes(),
        PutOpts::default(),
    )
    .await?;
    let p = Policy::from_json(&PolicyName::new("nullp")?, br#"{"backend":"null"}"#)?;
    kv.put(
        &volcore::Keys::new(&prefix)?.policy(&PolicyName::new("nullp")?),
        p.to_json(),
        PutOpts::default(),
    )
    .await?;
    let cfg = PluginConfig {
        socket_dir: work.clone(),
        plugin_name: "ops".into(),
        host: HostName::new("ops")?,
        state_dir: work.join("state"),
        prefix: prefix.clone(),
        default_policy: None,
        on_lease_loss: LeaseLossAction::Unmount,
        cgroup_parent: PathBuf::from("docker"),
        cgroup_v2: None,
        mount_path: None,
    };
    let sock: PathBuf = work.join("ops.sock");
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    let plugin = tokio::spawn(run(
        cfg,
        PluginDeps {
            kv: kv.clone(),
            drivers: Drivers::new().with_null(),
        },
        async {
            let _ = rx.await;
        },
    ));
    let deadline = Instant::now() + Duration::from_secs(10);
    while call(&sock, "VolumeDriver.List", &json!({})).await.is_err() {
        if Instant::now() > deadline {
            bail!("the plugin did not come up");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    for i in 0..220 {
        call(
            &sock,
            "VolumeDriver.Create",
            &json!({"Name": format!("nullp/v{i}")}),
        )
        .await?;
    }
    println!("volplugin in-process, null backend, etcd on loopback, 220 volumes:");
    // Mount+Unmount cycles.
    let n = 300;
    let mut lat = Vec::with_capacity(n);
    counting.take();
    let start = Instant::now();
    for i in 0..n {
        let t = Instant::now();
        let id = format!("c{i}");
        call(
            &sock,
            "VolumeDriver.Mount",
            &json!({"Name": "nullp/v0", "ID": id}),
        )
        .await?;
        call(
            &sock,
            "VolumeDriver.Unmount",
            &json!({"Name": "nullp/v0", "ID": id}),
        )
        .await?;
        lat.push(t.elapsed());
    }
    let wall = start.elapsed();
    let calls = counting.take();
    println!(
        "  {:<28} {n:>5} cycles {:>7.1} cycles/s  p50 {:>7.3} ms   {}",
        "Mount+Unmount",
        n as f64 / wall.as_secs_f64(),
        p50_ms(&mut lat),
        per_call(calls, n)
    );
    // One Mount alone and one Unmount alone, counted; then mounted for the reads below.
    for (label, endpoint) in [
        ("Mount (first on this host)", "VolumeDriver.Mount"),
        ("Unmount (last on this host)", "VolumeDriver.Unmount"),
        ("", "VolumeDriver.Mount"),
    ] {
        counting.take();
        call(&sock, endpoint, &json!({"Name": "nullp/v1", "ID": "m"})).await?;
        if !label.is_empty() {
            println!("  {label}: {}", per_call(counting.take(), 1));
        }
    }
    let mounted = json!({"Name": "nullp/v1"});
    let unmounted = json!({"Name": "nullp/v2"});
    measure(
        &counting,
        &sock,
        "Get (mounted here)",
        "VolumeDriver.Get",
        &mounted,
        1000,
    )
    .await?;
    measure(
        &counting,
        &sock,
        "Get (not mounted)",
        "VolumeDriver.Get",
        &unmounted,
        1000,
    )
    .await?;
    measure(
        &counting,
        &sock,
        "Path (mounted here)",
        "VolumeDriver.Path",
        &mounted,
        1000,
    )
    .await?;
    measure(
        &counting,
        &sock,
        "List (220 volumes)",
        "VolumeDriver.List",
        &json!({}),
        300,
    )
    .await?;
    call(
        &sock,
        "VolumeDriver.Unmount",
        &json!({"Name": "nullp/v1", "ID": "m"}),
    )
    .await?;
    let _ = tx.send(());
    plugin.await??;
    let _ = std::fs::remove_dir_all(&work);
    Ok(())
}
