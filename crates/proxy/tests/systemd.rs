//! systemd: `sd_notify` messages to a fake `NOTIFY_SOCKET` (READY at
//! start-up, RELOADING and READY around a SIGHUP reload, STOPPING on
//! SIGTERM), and socket activation: the proxy serves on the socket
//! `systemd-socket-activate` passes it, without `--listen`.

mod common;

use std::os::unix::net::UnixDatagram;
use std::process::Command;
use std::thread;
use std::time::{Duration, Instant};

use common::{echo_backend, free_port, Client, Files, Proxy};
use tls_reload_testkit::{client_config, Ca, Process, DEADLINE};

fn next_message(socket: &UnixDatagram) -> String {
    let mut buf = [0; 4096];
    let n = socket
        .recv(&mut buf)
        .expect("a notification within the deadline");
    String::from_utf8(buf[..n].to_vec()).expect("utf-8")
}

#[test]
fn systemd_is_told_ready_reloading_and_stopping() {
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let path = files.dir.path().join("notify.sock");
    let socket = UnixDatagram::bind(&path).expect("bind");
    socket.set_read_timeout(Some(DEADLINE)).expect("timeout");
    let mut proxy = Proxy::start_with(&files, echo_backend(), &["--events", "off"], |command| {
        command.env("NOTIFY_SOCKET", &path);
    });
    assert_eq!(next_message(&socket), "READY=1");
    // Ready means serving.
    let mut client = Client::connect(proxy.addr, &client_config(&ca, None)).expect("connect");
    assert_eq!(client.round_trip(b"hi").expect("echo"), b"hi");

    proxy.signal("HUP");
    let reloading = next_message(&socket);
    let usec = reloading
        .strip_prefix("RELOADING=1\nMONOTONIC_USEC=")
        .unwrap_or_else(|| panic!("{reloading:?}"));
    assert!(usec.parse::<u64>().expect("a number") > 0);
    assert_eq!(next_message(&socket), "READY=1");

    proxy.signal("TERM");
    assert_eq!(next_message(&socket), "STOPPING=1");
    drop(client);
    assert!(proxy.wait_exit(DEADLINE).expect("exit").success());
}

#[test]
fn a_socket_passed_by_systemd_is_served_by_the_workers() {
    let activate = "systemd-socket-activate";
    if Command::new(activate).arg("--help").output().is_err() {
        eprintln!("{activate} is not installed (Debian package systemd): skipped");
        return;
    }
    let ca = Ca::new("proxy test CA");
    let files = Files::new(&ca, &ca.leaf(0x1001));
    let addr = free_port();
    let mut command = Command::new(activate);
    command
        .args(["--listen", &addr.to_string(), "--"])
        .arg(env!("CARGO_BIN_EXE_tls-reload-proxy"))
        .args(["--target", &echo_backend().to_string(), "--threads", "2"])
        .arg("--cert")
        .arg(&files.cert)
        .arg("--key")
        .arg(&files.key)
        .env("RUST_LOG", "info");
    let activator = Process::spawn(&mut command);
    let start = Instant::now();
    while !activator.stderr().contains("Listening on") {
        assert!(start.elapsed() < DEADLINE, "{activate} did not listen");
        thread::sleep(Duration::from_millis(10));
    }
    let config = client_config(&ca, None);
    // systemd-socket-activate starts the proxy at the first connection,
    // which waits in the socket's queue meanwhile.
    let first = {
        let config = config.clone();
        thread::spawn(move || {
            let mut client = Client::connect(addr, &config).expect("connect");
            client.round_trip(b"first").expect("echo")
        })
    };
    let proxy = Proxy::from_process(activator, false);
    assert_eq!(proxy.addr, addr);
    assert_eq!(first.join().expect("first client"), b"first");
    for n in 0..20u8 {
        let mut client = Client::connect(addr, &config).expect("connect");
        assert_eq!(client.round_trip(&[n]).expect("echo"), [n]);
    }
}
