//! Headless Chromium, for the tests that look at a page as a browser shows it: its DOM after
//! load, a screenshot, what it logged to its console, each chart as laid out, and every request
//! the page made.
//!
//! Chromium makes requests of its own (component updates, the network time, the signed-in
//! accounts) whatever the flags say, so the page's requests are read from its net log, where
//! each request names who made it; and every request, the browser's own included, goes to a
//! proxy on loopback that refuses it, so that nothing leaves the machine.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

pub const CHROMIUM: &str = "/usr/bin/chromium";

/// A page as Chromium showed it.
pub struct Page {
    /// The DOM after load, as `--dump-dom` prints it.
    pub dom: String,
    /// A PNG of the whole page, 1280 pixels wide.
    pub screenshot: Vec<u8>,
    /// What the page logged to its console, one message each, with its source line.
    pub console: Vec<String>,
    /// The URL of every request the page made (the browser's own left out).
    pub requests: Vec<String>,
    /// Every `<svg>` of the page, as laid out.
    pub charts: Vec<Chart>,
}

/// An `<svg>` element's box on the page and its marks'.
#[derive(Debug)]
pub struct Chart {
    pub class: String,
    pub width: f64,
    pub height: f64,
    pub marks: Vec<Mark>,
}

/// A `rect`, `line`, `polyline`, `path` or `circle` of a chart, by its box on the page.
#[derive(Debug)]
pub struct Mark {
    pub tag: String,
    pub class: String,
    pub width: f64,
    pub height: f64,
}

impl Chart {
    /// The marks of a class (`bar`, `accepted`) that take room on the page: some width or
    /// height, since a flat line has none of the other.
    pub fn drawn(&self, class: &str) -> Vec<&Mark> {
        self.marks
            .iter()
            .filter(|m| m.class.split(' ').any(|c| c == class))
            .filter(|m| m.width > 0.0 || m.height > 0.0)
            .collect()
    }
}

/// Opens `html` (a file) in headless Chromium.
///
/// Two runs: one of a copy with a probe script that lays out every chart and measures the
/// page, then one of the page itself, in a window as tall as the page, for its DOM, its
/// screenshot and its console.
pub fn open(html: &Path) -> Page {
    assert!(
        Path::new(CHROMIUM).exists(),
        "this test needs headless Chromium at {CHROMIUM}: install it with \
         `apt-get install -y chromium` (as root; `sudo apt-get install -y chromium` otherwise), \
         as .ci/run does"
    );
    let dir = tempfile::tempdir().unwrap();
    let proxy = Proxy::start();
    let probe = dir.path().join("probe.html");
    std::fs::write(&probe, with_probe(&std::fs::read_to_string(html).unwrap())).unwrap();
    let measured = chromium(&proxy, dir.path(), "probe", &probe, 900);
    let found = between(&measured.dom, "<pre id=\"bv-probe\">", "</pre>")
        .unwrap_or_else(|| panic!("the probe found no layout; the DOM:\n{}", measured.dom));
    let layout: serde_json::Value = serde_json::from_str(&unescape(found)).unwrap();
    let height = layout["height"].as_f64().unwrap().ceil() as u32;
    let shown = chromium(&proxy, dir.path(), "page", html, height.clamp(600, 16_000));
    let mut requests = measured.requests;
    requests.extend(shown.requests);
    requests.sort();
    requests.dedup();
    Page {
        dom: shown.dom,
        screenshot: std::fs::read(dir.path().join("page.png")).expect("Chromium's screenshot"),
        console: shown.console,
        requests,
        charts: layout["charts"]
            .as_array()
            .unwrap()
            .iter()
            .map(chart)
            .collect(),
    }
}

/// Lays out every chart and the page, and writes what it found into the page as JSON. A
/// Content-Security-Policy of the page's own would refuse the script, so the copy goes
/// without it; the run of the page itself keeps it.
const PROBE: &str = r#"<script>
(() => {
  const size = (e) => { const b = e.getBoundingClientRect(); return [b.width, b.height]; };
  const charts = [...document.querySelectorAll('svg')].map((svg) => {
    const [width, height] = size(svg);
    const marks = [...svg.querySelectorAll('rect, line, polyline, path, circle')].map((m) => {
      const [width, height] = size(m);
      return { tag: m.tagName, class: m.getAttribute('class') || '', width, height };
    });
    return { class: svg.getAttribute('class') || '', width, height, marks };
  });
  const height = document.documentElement.scrollHeight;
  const out = document.createElement('pre');
  out.id = 'bv-probe';
  out.textContent = JSON.stringify({ height, charts });
  document.body.appendChild(out);
})();
</script>"#;

fn with_probe(html: &str) -> String {
    let mut page = html.to_string();
    let tag = "<meta http-equiv=\"Content-Security-Policy\"";
    if let Some(at) = page.find(tag) {
        let end = at + page[at..].find('>').unwrap() + 1;
        page.replace_range(at..end, "");
    }
    page + PROBE
}

fn chart(v: &serde_json::Value) -> Chart {
    let text = |v: &serde_json::Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
    Chart {
        class: text(v, "class"),
        width: v["width"].as_f64().unwrap(),
        height: v["height"].as_f64().unwrap(),
        marks: v["marks"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| Mark {
                tag: text(m, "tag"),
                class: text(m, "class"),
                width: m["width"].as_f64().unwrap(),
                height: m["height"].as_f64().unwrap(),
            })
            .collect(),
    }
}

fn between<'a>(text: &'a str, start: &str, end: &str) -> Option<&'a str> {
    let from = text.find(start)? + start.len();
    Some(&text[from..from + text[from..].find(end)?])
}

/// Text content as the DOM serialises it, read back.
fn unescape(text: &str) -> String {
    text.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&nbsp;", "\u{a0}")
        .replace("&amp;", "&")
}

/// What one run of Chromium printed and logged.
struct Run {
    dom: String,
    console: Vec<String>,
    requests: Vec<String>,
}

/// Runs Chromium on `page` in a window 1280 pixels wide and `height` tall, with a profile,
/// a net log and a screenshot named `name` in `dir`.
fn chromium(proxy: &Proxy, dir: &Path, name: &str, page: &Path, height: u32) -> Run {
    let net_log = dir.join(format!("{name}-net.json"));
    let mut c = Command::new(CHROMIUM);
    c.args([
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--enable-logging=stderr",
        "--v=0",
        "--proxy-bypass-list=<-loopback>",
        "--dump-dom",
    ])
    .arg(format!("--proxy-server=http://127.0.0.1:{}", proxy.port))
    .arg(format!("--user-data-dir={}", dir.join(name).display()))
    .arg(format!("--log-net-log={}", net_log.display()))
    .arg(format!("--window-size=1280,{height}"))
    .arg(format!(
        "--screenshot={}",
        dir.join(format!("{name}.png")).display()
    ))
    .arg(file_url(page))
    // Whatever Chromium writes of its own goes into the temporary directory.
    .env("HOME", dir)
    .stdin(Stdio::null())
    .stdout(Stdio::piped())
    .stderr(Stdio::piped());
    let (status, stdout, stderr) = run_with_limit(c, Duration::from_secs(90));
    assert!(
        status,
        "Chromium failed on {}:\n{}",
        page.display(),
        tail(&stderr)
    );
    let log = std::fs::read_to_string(&net_log).expect("Chromium's net log");
    Run {
        dom: stdout,
        console: stderr
            .lines()
            .filter(|l| l.contains(":CONSOLE"))
            .map(|l| l.split_once("] ").map_or(l, |(_, m)| m).to_string())
            .collect(),
        requests: page_requests(&log),
    }
}

/// `file:///...`, with what a URL cannot hold percent-encoded.
fn file_url(path: &Path) -> String {
    let path = path.canonicalize().unwrap();
    let mut url = String::from("file://");
    for b in path.to_str().unwrap().bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            url.push(char::from(b));
        } else {
            url.push_str(&format!("%{b:02X}"));
        }
    }
    url
}

/// The requests of the net log that the page made. The browser's own have no initiator
/// ("not an origin") and are keyed to no site of the page's, while a page opened from a file
/// has the origin "null" and the site `file://`.
fn page_requests(log: &str) -> Vec<String> {
    let log: serde_json::Value = serde_json::from_str(log)
        .unwrap_or_else(|e| panic!("Chromium's net log does not read as JSON ({e})"));
    let start = log["constants"]["logEventTypes"]["URL_REQUEST_START_JOB"]
        .as_u64()
        .expect("the net log names its event types");
    let mut urls = Vec::new();
    for event in log["events"].as_array().unwrap() {
        if event["type"].as_u64() != Some(start) {
            continue;
        }
        let p = &event["params"];
        let by_page = p["initiator"].as_str() != Some("not an origin")
            || p["network_isolation_key"]
                .as_str()
                .is_some_and(|k| k.starts_with("file://"));
        if by_page && let Some(url) = p["url"].as_str() {
            urls.push(url.to_string());
        }
    }
    urls
}

/// Runs `c` to its end, or kills it after `limit`; its status, stdout and stderr.
fn run_with_limit(mut c: Command, limit: Duration) -> (bool, String, String) {
    let mut child = c.spawn().expect("start Chromium");
    let read = |mut r: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut s = String::new();
            let _ = r.read_to_string(&mut s);
            s
        })
    };
    let out = read(Box::new(child.stdout.take().unwrap()));
    let err = read(Box::new(child.stderr.take().unwrap()));
    let start = Instant::now();
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if start.elapsed() > limit {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "Chromium took more than {limit:?}:\n{}",
                tail(&err.join().unwrap())
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    (status.success(), out.join().unwrap(), err.join().unwrap())
}

fn tail(text: &str) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}

/// An HTTP proxy on loopback that answers every request 502 without going anywhere.
struct Proxy {
    port: u16,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Proxy {
    fn start() -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let stop = Arc::new(AtomicBool::new(false));
        let stopped = stop.clone();
        let thread = std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopped.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    refuse(conn);
                }
            }
        });
        Proxy {
            port,
            stop,
            thread: Some(thread),
        }
    }
}

/// Reads the request's head, then refuses it.
fn refuse(mut conn: TcpStream) {
    let _ = conn.set_read_timeout(Some(Duration::from_secs(2)));
    let mut reader = BufReader::new(&conn);
    let mut line = String::new();
    while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
        line.clear();
    }
    let _ = conn
        .write_all(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\nConnection: close\r\n\r\n");
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        let _ = TcpStream::connect(("127.0.0.1", self.port));
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
