//! A JSON-lines client for bgpd's control socket (what lbd will speak), blocking, for tests.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;

pub struct ControlClient {
    rd: BufReader<UnixStream>,
    wr: UnixStream,
}

impl ControlClient {
    pub fn connect(p: &Path) -> std::io::Result<ControlClient> {
        let s = UnixStream::connect(p)?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        Ok(ControlClient {
            rd: BufReader::new(s.try_clone()?),
            wr: s,
        })
    }

    /// Sends one request and returns the answer; panics on a transport error.
    pub fn call(&mut self, req: Value) -> Value {
        let mut line = serde_json::to_vec(&req).expect("json");
        line.push(b'\n');
        self.wr
            .write_all(&line)
            .expect("write to bgpd control socket");
        let mut answer = String::new();
        self.rd
            .read_line(&mut answer)
            .expect("read from bgpd control socket");
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("bad answer {answer:?}: {e}"))
    }
}
