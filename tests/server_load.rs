//! The store server, driven with raw `SOCK_SEQPACKET` packets: many clients,
//! idle and stalled connections.
//!
//! Tests that mount need root in a private mount namespace
//! (`tests/in-private-ns.sh cargo test --test <this file>`); elsewhere they
//! print a SKIP line and pass.
//! The benchmarks are ignored tests:
//! `cargo test --release --test server_load -- --ignored --nocapture --test-threads 1 bench_`.

mod common;

use std::fs;
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::{Duration, Instant};

use nix::sys::socket::{self, MsgFlags};
use serde_json::json;

use common::server::*;

// ---------------------------------------------------------------------------
// Concurrency

#[test]
fn many_concurrent_clients() {
    let fx = Fixture::new();
    fx.commit("committed", &[]);
    let socket = fx.socket();
    let store = fx.store_path();
    // The object itself (cache.md).
    let object = object_of(fx.store.path(), "committed");
    let committed = format!(r#"{{"path": "{}"}}"#, object.display());
    let threads: Vec<_> = (0..50)
        .map(|t| {
            let socket = socket.clone();
            let store = store.clone();
            let committed = committed.clone();
            std::thread::spawn(move || {
                let client = Client::connect(&socket);
                for i in 0..200 {
                    match i % 3 {
                        0 => assert_eq!(
                            text(&client.call(read_tree("committed").to_string().as_bytes())),
                            committed
                        ),
                        1 => assert_eq!(
                            client.call(read_tree("nope").to_string().as_bytes()),
                            br#"{"path": null}"#
                        ),
                        _ => {
                            let name = format!("s{t}-{i}");
                            let reply = client.call(
                                json!({"method": "source", "name": name})
                                    .to_string()
                                    .as_bytes(),
                            );
                            assert_eq!(
                                text(&reply),
                                format!(r#"{{"path": "{store}/sources/{name}"}}"#)
                            );
                        }
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().expect("client thread");
    }
}

#[test]
fn hundreds_of_idle_connections_do_not_stop_the_server() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    let idle: Vec<Client> = (0..500).map(|_| fx.client()).collect();
    let started = Instant::now();
    assert!(fx.client().call_json(&read_tree("x"))["path"].is_string());
    assert!(started.elapsed() < Duration::from_secs(5));
    // Every idle connection is still served.
    for client in &idle {
        assert!(client.call_json(&read_tree("x"))["path"].is_string());
    }
}

#[test]
fn a_client_that_does_not_read_its_replies_stalls_nobody() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    let greedy = fx.client();
    nix::fcntl::fcntl(
        &greedy.fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
    )
    .unwrap();
    let request = read_tree("x").to_string();
    // Send requests without reading replies until the socket is full.
    let mut sent = 0;
    let deadline = Instant::now() + Duration::from_secs(10);
    while Instant::now() < deadline {
        match socket::send(
            greedy.fd.as_raw_fd(),
            request.as_bytes(),
            MsgFlags::MSG_DONTWAIT,
        ) {
            Ok(_) => sent += 1,
            Err(nix::errno::Errno::EAGAIN) => {
                // The server may still be draining: give it a moment, then stop.
                std::thread::sleep(Duration::from_millis(50));
                if socket::send(
                    greedy.fd.as_raw_fd(),
                    request.as_bytes(),
                    MsgFlags::MSG_DONTWAIT,
                )
                .is_ok()
                {
                    sent += 1;
                    continue;
                }
                break;
            }
            Err(e) => panic!("send: {e}"),
        }
    }
    assert!(sent > 10, "only {sent} requests sent");
    // Others are served meanwhile.
    let other = fx.client();
    for _ in 0..100 {
        assert!(other.call_json(&read_tree("x"))["path"].is_string());
    }
    // The greedy client gets every reply, in order, once it reads.
    nix::fcntl::fcntl(
        &greedy.fd,
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    for _ in 0..sent {
        assert!(greedy.recv().starts_with(b"{\"path\": \""));
    }
}

#[test]
fn clients_that_disconnect_mid_request_do_no_harm() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    for i in 0..200 {
        let client = fx.client();
        match i % 3 {
            0 => client.send(read_tree("x").to_string().as_bytes()),
            1 => client.send(br#"{"method": "mkdtemp"}"#),
            _ => {}
        }
        drop(client);
    }
    let client = fx.client();
    for _ in 0..10 {
        assert!(client.call_json(&read_tree("x"))["path"].is_string());
    }
}

// ---------------------------------------------------------------------------
// Benchmarks (ignored; run with --release --ignored --nocapture --test-threads 1)

fn round_trips(socket: &Path, clients: usize, duration: Duration) -> f64 {
    let request = read_tree("x").to_string();
    let start = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|_| {
            let socket = socket.to_path_buf();
            let request = request.clone();
            std::thread::spawn(move || {
                let client = Client::connect(&socket);
                let mut buf = [0u8; 4096];
                let mut n = 0u64;
                while start.elapsed() < duration {
                    for _ in 0..100 {
                        socket::send(client.fd.as_raw_fd(), request.as_bytes(), MsgFlags::empty())
                            .unwrap();
                        socket::recv(client.fd.as_raw_fd(), &mut buf, MsgFlags::empty()).unwrap();
                    }
                    n += 100;
                }
                n
            })
        })
        .collect();
    let total: u64 = threads.into_iter().map(|t| t.join().unwrap()).sum();
    total as f64 / start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark"]
fn bench_round_trips() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    let socket = fx.socket();
    for clients in [1, 8] {
        let rate = round_trips(&socket, clients, Duration::from_secs(3));
        println!("read-tree round trips/s with {clients} client(s): {rate:.0}");
    }
}

/// A "<name>: <n> kB" field of a /proc file.
fn kib(file: &str, name: &str) -> u64 {
    fs::read_to_string(file)
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap()
}

fn rss_kib() -> u64 {
    kib("/proc/self/status", "VmRSS")
}

#[test]
#[ignore = "benchmark"]
fn bench_idle_connection_memory() {
    let fx = Fixture::new();
    fx.commit("x", &[]);
    // Warm up: the loop's buffers, the first connection slots.
    fx.client().call_json(&read_tree("x"));
    let before = rss_kib();
    let slab_before = kib("/proc/meminfo", "Slab");
    let idle: Vec<Client> = (0..1000).map(|_| fx.client()).collect();
    // Make sure the server has accepted them all.
    assert!(idle[999].call_json(&read_tree("x"))["path"].is_string());
    let after = rss_kib();
    let slab_after = kib("/proc/meminfo", "Slab");
    let per_connection = (after.saturating_sub(before) * 1024) as f64 / 1000.0;
    println!(
        "RSS {before} KiB -> {after} KiB with 1000 idle connections (server and client in this process): \
         {per_connection:.0} bytes per connection; kernel slab {:.1} KiB per connection (both ends, \
         system-wide, noisy)",
        slab_after.saturating_sub(slab_before) as f64 / 1000.0
    );
    assert!(per_connection < 16384.0);
}
