//! What the benches share: the sandbox as a process of its own, and reaping a client with its
//! own resource usage.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::process::{Child, ChildStdout, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::Value;

pub const BIN: &str = env!("CARGO_BIN_EXE_bulkverify");

/// A `bulkverify sandbox` process, killed when dropped.
pub struct Sandbox {
    child: Child,
    pub url: String,
    /// Kept open so that the sandbox never writes to a closed pipe.
    _stdout: BufReader<ChildStdout>,
}

impl Sandbox {
    pub fn start(args: &[String]) -> anyhow::Result<Sandbox> {
        let mut child = Command::new(BIN)
            .args(["sandbox", "--port", "0"])
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start bulkverify sandbox")?;
        let stdout = child.stdout.take().context("no sandbox stdout")?;
        let mut sandbox = Sandbox {
            child,
            url: String::new(),
            _stdout: BufReader::new(stdout),
        };
        let mut line = String::new();
        sandbox._stdout.read_line(&mut line)?;
        sandbox.url = line
            .trim_end()
            .strip_prefix("bulkverify sandbox listening on ")
            .with_context(|| format!("unexpected first line from the sandbox: {line:?}"))?
            .to_string();
        Ok(sandbox)
    }

    pub fn stats(&self) -> anyhow::Result<Value> {
        let addr = self.url.trim_start_matches("http://");
        let body = http_get(addr, "/_sandbox/stats")?;
        serde_json::from_str(&body).context("the sandbox stats are not JSON")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A blocking HTTP/1.1 GET; returns the body of a 200 answer.
fn http_get(addr: &str, path: &str) -> anyhow::Result<String> {
    let mut stream = TcpStream::connect(addr).with_context(|| format!("connect {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(30)))?;
    write!(
        stream,
        "GET {path} HTTP/1.1\r\nHost: {addr}\r\nConnection: close\r\n\r\n"
    )?;
    let mut response = String::new();
    stream.read_to_string(&mut response)?;
    let (head, body) = response
        .split_once("\r\n\r\n")
        .context("malformed HTTP answer")?;
    let status = head.lines().next().unwrap_or_default();
    if !status.starts_with("HTTP/1.1 200") {
        bail!("GET {path}: {status}");
    }
    Ok(body.to_string())
}

/// Reaps `pid` if it has ended, with its own resource usage (`wait4`: exactly this child's,
/// unlike `getrusage(RUSAGE_CHILDREN)`, whose peak memory is the largest of all children so far).
pub fn reap(pid: libc::pid_t) -> anyhow::Result<Option<(ExitStatus, libc::rusage)>> {
    use std::os::unix::process::ExitStatusExt;
    let mut status = 0;
    // SAFETY: an all-zero rusage is a valid value, and wait4 only writes into it and `status`.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    let rc = unsafe { libc::wait4(pid, &mut status, libc::WNOHANG, &mut usage) };
    match rc {
        0 => Ok(None),
        r if r == pid => Ok(Some((ExitStatus::from_raw(status), usage))),
        _ => Err(std::io::Error::last_os_error()).context("wait4"),
    }
}

/// Waits for `child`, started at `started`, and reaps it with its own resource usage; kills it
/// once it runs past `timeout` (then both are `None`).
///
/// `ru_maxrss` is the child's own peak, read from its `VmHWM` while it runs (to the last
/// 10 ms): Linux carries the parent's peak into a spawned child's `ru_maxrss`, so a bench
/// that held a large answer in memory would report it as the client's.
pub fn wait_with_usage(
    child: &mut Child,
    started: Instant,
    timeout: Duration,
) -> anyhow::Result<(Option<ExitStatus>, Option<libc::rusage>)> {
    let pid = libc::pid_t::try_from(child.id()).context("pid")?;
    let mut peak_kib: Option<libc::c_long> = None;
    loop {
        if let Some(hwm) = high_water_kib(pid) {
            peak_kib = Some(peak_kib.map_or(hwm, |p| p.max(hwm)));
        }
        if let Some((status, mut usage)) = reap(pid)? {
            if let Some(peak) = peak_kib {
                usage.ru_maxrss = peak;
            }
            return Ok((Some(status), Some(usage)));
        }
        if started.elapsed() > timeout {
            child.kill()?;
            child.wait()?;
            return Ok((None, None));
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// A comma-separated list from the environment variable `name`, or `default`.
pub fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.to_string())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

/// The peak resident set of the process `pid` so far, in KiB (`VmHWM`).
fn high_water_kib(pid: libc::pid_t) -> Option<libc::c_long> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))?
        .trim()
        .strip_suffix("kB")?
        .trim()
        .parse()
        .ok()
}
