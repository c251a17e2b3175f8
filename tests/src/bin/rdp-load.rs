//! `rdp-load ADDR CONNS SECONDS`: a closed-loop load generator for the plugin benchmark
//! (`topologies/bench/plugin-conn.sh`). CONNS threads each, until SECONDS have passed, open a
//! TCP connection to ADDR, send one RDP X.224 Connection Request with a `Cookie: mstshash=`
//! of a new user (MS-RDPBCGR 2.2.1.1), read the answer until the server closes, and close.
//! Prints `conn/s N errors E`. (wrk cannot do this: it checks that requests are HTTP.)

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

fn request(user: u64) -> Vec<u8> {
    let mut rest = vec![0xe0, 0, 0, 0, 0, 0];
    rest.extend_from_slice(format!("Cookie: mstshash=user{user}\r\n").as_bytes());
    rest.extend_from_slice(&[1, 0, 8, 0, 3, 0, 0, 0]);
    let len = 5 + rest.len();
    let mut out = vec![3, 0, (len >> 8) as u8, len as u8, (len - 5) as u8];
    out.extend_from_slice(&rest);
    out
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if args.len() != 4 {
        eprintln!("usage: rdp-load ADDR CONNS SECONDS");
        std::process::exit(2);
    }
    let addr: SocketAddr = args[1].parse().expect("ADDR is IP:PORT");
    let conns: u64 = args[2].parse().expect("CONNS is a number");
    let secs: u64 = args[3].parse().expect("SECONDS is a number");
    let done = Arc::new(AtomicU64::new(0));
    let errors = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let end = start + Duration::from_secs(secs);
    let threads: Vec<_> = (0..conns)
        .map(|t| {
            let (done, errors) = (done.clone(), errors.clone());
            std::thread::spawn(move || {
                let mut user = t << 32;
                let mut buf = [0u8; 512];
                while Instant::now() < end {
                    user += 1;
                    let ok = (|| -> std::io::Result<()> {
                        let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
                        s.set_read_timeout(Some(Duration::from_secs(2)))?;
                        s.write_all(&request(user))?;
                        while s.read(&mut buf)? > 0 {}
                        Ok(())
                    })();
                    match ok {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errors.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for t in threads {
        let _ = t.join();
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "conn/s {:.0} errors {}",
        done.load(Ordering::Relaxed) as f64 / el,
        errors.load(Ordering::Relaxed)
    );
}
