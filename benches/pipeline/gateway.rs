//! Real gateways in front of a sandbox that limits nothing, for the quota matrix: limiters we
//! did not write, each counting in its own way, keyed by the API key as a gateway in front of
//! an API is (so that the account's jobs share one limit, as the sandbox limits a credential).
//!
//! - **nginx** (`limit_req rate=20r/s`, no burst): a leaky bucket on a millisecond clock, the
//!   strictest way a rate is counted; the first measurements were taken against it.
//! - **HAProxy** (`http_req_rate(1s)` in a stick table, denied over 20): a sliding-window
//!   counter, which estimates the last second's requests from this second's count and a share
//!   of the last one's, as Cloudflare's and many Redis limiters do; and it counts the requests
//!   it refuses, so that a client that keeps sending into a full window keeps it full.
//!
//! Each runs when installed (`apt-get install nginx-light haproxy`), logs its answers to a file
//! the cell's 429s are counted from, and is killed when dropped.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::Context;

/// Which gateway a mode of the matrix runs.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Nginx,
    Haproxy,
}

impl Kind {
    /// The gateway the matrix's `mode` names, if it names one.
    pub fn of(mode: &str) -> Option<Kind> {
        match mode {
            "nginx" => Some(Kind::Nginx),
            "haproxy" => Some(Kind::Haproxy),
            _ => None,
        }
    }

    fn program(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx",
            Kind::Haproxy => "haproxy",
        }
    }

    /// What to install when it is missing.
    pub fn package(self) -> &'static str {
        match self {
            Kind::Nginx => "nginx-light",
            Kind::Haproxy => "haproxy",
        }
    }

    pub fn installed(self) -> bool {
        Command::new(self.program())
            .arg("-v")
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    }

    /// The configuration limiting to `rate` a second on `port` in front of `upstream`
    /// (`host:port`). nginx logs only its 429s; HAProxy logs every answer's status, one line
    /// each, to its standard output.
    fn config(self, rate: u32, port: u16, upstream: &str) -> String {
        match self {
            Kind::Nginx => format!(
                "daemon off;\nmaster_process off;\npid nginx.pid;\nerror_log error.log error;\n\
                 events {{ worker_connections 1024; }}\n\
                 http {{\n\
                   client_body_temp_path body; proxy_temp_path proxy; fastcgi_temp_path fastcgi;\n\
                   uwsgi_temp_path uwsgi; scgi_temp_path scgi;\n\
                   map $status $refused {{ 429 1; default 0; }}\n\
                   log_format refused '$msec $status';\n\
                   access_log answers.log refused if=$refused;\n\
                   limit_req_zone $http_x_api_key zone=account:1m rate={rate}r/s;\n\
                   limit_req_status 429;\n\
                   upstream sandbox {{ server {upstream}; keepalive 64; }}\n\
                   server {{\n\
                     listen 127.0.0.1:{port};\n\
                     location / {{\n\
                       limit_req zone=account;\n\
                       proxy_pass http://sandbox;\n\
                       proxy_http_version 1.1;\n\
                       proxy_set_header Connection \"\";\n\
                     }}\n\
                   }}\n\
                 }}\n"
            ),
            Kind::Haproxy => format!(
                "global\n  log stdout format raw local0 info\n  maxconn 2000\n\
                 defaults\n  mode http\n  log global\n  log-format \"%Ts.%ms %ST\"\n\
                   timeout connect 5s\n  timeout client 60s\n  timeout server 60s\n\
                 frontend account\n  bind 127.0.0.1:{port}\n\
                   stick-table type string len 128 size 10k expire 30s store http_req_rate(1s)\n\
                   http-request track-sc0 req.hdr(x-api-key)\n\
                   http-request deny deny_status 429 if {{ sc_http_req_rate(0) gt {rate} }}\n\
                   default_backend sandbox\n\
                 backend sandbox\n  http-reuse always\n  server sandbox {upstream}\n"
            ),
        }
    }
}

/// A gateway process limiting to `rate` a second per API key.
pub struct Gateway {
    kind: Kind,
    child: std::process::Child,
    pub url: String,
    dir: tempfile::TempDir,
}

impl Gateway {
    pub fn start(kind: Kind, rate: u32, upstream: &str) -> anyhow::Result<Gateway> {
        let dir = tempfile::tempdir()?;
        let port = std::net::TcpListener::bind("127.0.0.1:0")?
            .local_addr()?
            .port();
        let conf = kind.config(rate, port, upstream.trim_start_matches("http://"));
        let mut command = Command::new(kind.program());
        match kind {
            Kind::Nginx => {
                std::fs::write(dir.path().join("nginx.conf"), conf)?;
                command
                    .arg("-p")
                    .arg(dir.path())
                    .args(["-c", "nginx.conf"])
                    .stdout(Stdio::null());
            }
            Kind::Haproxy => {
                std::fs::write(dir.path().join("haproxy.cfg"), conf)?;
                command
                    .args(["-db", "-f"])
                    .arg(dir.path().join("haproxy.cfg"))
                    .stdout(std::fs::File::create(dir.path().join("answers.log"))?);
            }
        }
        let child = command
            .stdin(Stdio::null())
            .stderr(std::fs::File::create(dir.path().join("error.log"))?)
            .spawn()
            .with_context(|| format!("cannot start {}", kind.program()))?;
        let gateway = Gateway {
            kind,
            child,
            url: format!("http://127.0.0.1:{port}"),
            dir,
        };
        let started = Instant::now();
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            if started.elapsed() > Duration::from_secs(10) {
                let log = read(&gateway.dir.path().join("error.log"));
                anyhow::bail!(
                    "{} did not listen on {port} within 10 s: {log:?}",
                    kind.program()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(gateway)
    }

    /// The 429s it answered so far, from its log: nginx logs only those, HAProxy each answer.
    pub fn refused(&self) -> u64 {
        let log = read(&self.dir.path().join("answers.log"));
        match self.kind {
            Kind::Nginx => log.lines().count() as u64,
            Kind::Haproxy => log.lines().filter(|l| l.ends_with(" 429")).count() as u64,
        }
    }
}

/// A log's text, or none yet.
fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
