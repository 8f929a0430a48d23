//! 2 000 `docker volume ls` calls with bounded concurrency all succeed (volplugin
//! scenario 21). Its own test binary, so no other test's plugins come and go meanwhile.

#![allow(clippy::unwrap_used)] // tests fail by panicking

use std::path::Path;

use volcore_system_tests::*;

#[test]
fn two_thousand_volume_ls_calls() {
    let c = cluster(5);
    let p = plugin(
        &c,
        &format!("vctl{}", uniq()),
        "mon0",
        Path::new(DOCKER_PLUGINS),
    );
    docker_ok(&["volume", "create", "-d", &p.name, "policy1/listed"]);
    let start = std::time::Instant::now();
    // 40 workers × 50 calls, all must succeed.
    let handles: Vec<_> = (0..40)
        .map(|_| {
            std::thread::spawn(|| {
                let mut failures = 0;
                for _ in 0..50 {
                    let (code, out, _) = docker(&["volume", "ls", "-q"]);
                    if code != 0 || !out.lines().any(|l| l == "policy1/listed") {
                        failures += 1;
                    }
                }
                failures
            })
        })
        .collect();
    let failures: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    eprintln!("2000 docker volume ls calls took {:?}", start.elapsed());
    assert_eq!(
        failures, 0,
        "{failures} of 2000 docker volume ls calls failed or missed the volume"
    );
    docker_ok(&["volume", "rm", "policy1/listed"]);
}
