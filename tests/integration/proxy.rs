//! A fault-injecting HTTP/1.1 proxy between a cloud worker and a real
//! server: it forwards requests to an upstream base URL, or answers them
//! itself with an error, late, never, or by dropping the connection, as a
//! programmable plan says for each request; and it records every request as
//! it arrived (arrival instant, method, path, headers, every byte of head and
//! body), so tests can count requests per time window, read request bodies
//! and search them for values that must never leave.
//!
//! Requests are parsed here rather than by an HTTP server library so that a
//! fault can act at the connection level (no response at all) and so that
//! the recording is exactly what went over the wire. Request bodies must
//! carry `Content-Length` (as reqwest writes them); chunked requests are
//! refused with 501.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the proxy does with one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Fault {
    /// Forward to the upstream and relay its answer.
    Pass,
    /// Answer with this status and a small JSON error body, without
    /// forwarding.
    Status(u16),
    /// Answer `429 Too Many Requests` with `Retry-After: <seconds>`.
    TooManyRequests {
        /// The `Retry-After` value, in seconds.
        retry_after_s: u64,
    },
    /// Wait this long, then forward.
    Slow(Duration),
    /// Never answer: hold the connection open until the client gives up.
    Hang,
    /// Read the whole request, then close the connection without answering.
    Drop,
}

/// One request as the proxy received it.
#[derive(Debug, Clone)]
pub struct Recorded {
    /// Arrival number, from 0.
    pub n: usize,
    /// When its first byte arrived.
    pub at: Instant,
    /// HTTP method.
    pub method: String,
    /// Path and query.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
    /// Head and body exactly as they arrived.
    pub raw: Vec<u8>,
    /// What the plan did with it.
    pub fault: Fault,
}

impl Recorded {
    /// The first value of header `name` (lower case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The body as JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!("request {} body is not JSON ({e}): {}", self.n, String::from_utf8_lossy(&self.body))
        })
    }

    /// Whether `needle` occurs anywhere in what arrived (head or body).
    pub fn contains(&self, needle: &str) -> bool {
        let n = needle.as_bytes();
        !n.is_empty() && self.raw.windows(n.len()).any(|w| w == n)
    }
}

type Plan = Box<dyn Fn(usize) -> Fault + Send + Sync>;

struct State {
    upstream: String,
    client: reqwest::Client,
    plan: Mutex<Plan>,
    log: Mutex<Vec<Recorded>>,
}

/// The proxy; it stops accepting when dropped (open connections end with
/// the runtime).
pub struct FaultProxy {
    addr: SocketAddr,
    state: Arc<State>,
    accept: tokio::task::JoinHandle<()>,
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

impl FaultProxy {
    /// Listens on 127.0.0.1 (a free port) and forwards to `upstream`
    /// (`http://host:port`, no trailing slash). Every request passes until a
    /// plan is set. Needs a Tokio runtime.
    pub async fn start(upstream: &str) -> FaultProxy {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binding the proxy");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State {
            upstream: upstream.trim_end_matches('/').to_string(),
            client: reqwest::Client::builder()
                .no_proxy()
                .timeout(Duration::from_secs(30))
                .build()
                .expect("building the proxy's client"),
            plan: Mutex::new(Box::new(|_| Fault::Pass)),
            log: Mutex::new(Vec::new()),
        });
        let s = state.clone();
        let accept = tokio::spawn(async move {
            while let Ok((sock, _)) = listener.accept().await {
                let _ = sock.set_nodelay(true);
                tokio::spawn(serve(s.clone(), sock));
            }
        });
        FaultProxy { addr, state, accept }
    }

    /// `http://127.0.0.1:<port>`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// From now on, request number `n` (counted from the proxy's start) gets
    /// `plan(n)`.
    pub fn set_plan(&self, plan: impl Fn(usize) -> Fault + Send + Sync + 'static) {
        *self.state.plan.lock().unwrap() = Box::new(plan);
    }

    /// Request number `n` gets `faults[n]`; later ones pass.
    pub fn script(&self, faults: Vec<Fault>) {
        self.set_plan(move |n| faults.get(n).cloned().unwrap_or(Fault::Pass));
    }

    /// Every request so far, in arrival order.
    pub fn requests(&self) -> Vec<Recorded> {
        self.state.log.lock().unwrap().clone()
    }

    /// The `POST` requests so far (what a worker's `infer` sends; readiness
    /// checks are `GET`s).
    pub fn posts(&self) -> Vec<Recorded> {
        self.requests().into_iter().filter(|r| r.method == "POST").collect()
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// One client connection: requests one after another (keep-alive).
async fn serve(state: Arc<State>, mut sock: TcpStream) {
    let mut buf: Vec<u8> = Vec::new();
    let mut chunk = vec![0u8; 16 * 1024];
    loop {
        // The arrival instant is that of the request's first byte.
        let mut at = (!buf.is_empty()).then(Instant::now);
        let head_end = loop {
            if let Some(i) = find(&buf, b"\r\n\r\n") {
                break i + 4;
            }
            let n = match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            at.get_or_insert_with(Instant::now);
            buf.extend_from_slice(&chunk[..n]);
        };
        let at = at.unwrap_or_else(Instant::now);
        let (method, path, headers) = {
            let mut slots = [httparse::EMPTY_HEADER; 64];
            let mut req = httparse::Request::new(&mut slots);
            match req.parse(&buf[..head_end]) {
                Ok(httparse::Status::Complete(_)) => {}
                _ => {
                    let _ = sock.write_all(&response(400, &[], b"{\"error\":\"unparsable request\"}")).await;
                    return;
                }
            }
            let headers: Vec<(String, String)> = req
                .headers
                .iter()
                .map(|h| (h.name.to_ascii_lowercase(), String::from_utf8_lossy(h.value).into_owned()))
                .collect();
            (req.method.unwrap_or_default().to_string(), req.path.unwrap_or_default().to_string(), headers)
        };
        if headers.iter().any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked")) {
            let _ = sock.write_all(&response(501, &[], b"{\"error\":\"chunked requests are not supported\"}")).await;
            return;
        }
        let len: usize =
            headers.iter().find(|(k, _)| k == "content-length").and_then(|(_, v)| v.trim().parse().ok()).unwrap_or(0);
        while buf.len() < head_end + len {
            let n = match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            };
            buf.extend_from_slice(&chunk[..n]);
        }
        let raw: Vec<u8> = buf.drain(..head_end + len).collect();
        let body = raw[head_end..].to_vec();
        let fault = {
            let mut log = state.log.lock().unwrap();
            let n = log.len();
            let fault = (state.plan.lock().unwrap())(n);
            log.push(Recorded {
                n,
                at,
                method: method.clone(),
                path: path.clone(),
                headers: headers.clone(),
                body: body.clone(),
                raw,
                fault: fault.clone(),
            });
            fault
        };
        let reply = match fault {
            Fault::Pass => forward(&state, &method, &path, &headers, body).await,
            Fault::Slow(d) => {
                tokio::time::sleep(d).await;
                forward(&state, &method, &path, &headers, body).await
            }
            Fault::Status(status) => {
                response(status, &[], format!("{{\"error\":\"injected HTTP {status}\"}}").as_bytes())
            }
            Fault::TooManyRequests { retry_after_s } => response(
                429,
                &[("retry-after".into(), retry_after_s.to_string())],
                b"{\"error\":\"injected rate limit\"}",
            ),
            Fault::Hang => {
                // Read (and discard) until the client closes its end.
                let _ = tokio::time::timeout(Duration::from_secs(60), async {
                    while matches!(sock.read(&mut chunk).await, Ok(n) if n > 0) {}
                })
                .await;
                return;
            }
            Fault::Drop => return,
        };
        if sock.write_all(&reply).await.is_err() {
            return;
        }
    }
}

/// The upstream's answer to the request, as response bytes (502 when the
/// upstream cannot be reached).
async fn forward(state: &State, method: &str, path: &str, headers: &[(String, String)], body: Vec<u8>) -> Vec<u8> {
    let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap_or(reqwest::Method::GET);
    let mut req = state.client.request(method, format!("{}{path}", state.upstream)).body(body);
    for (k, v) in headers {
        if !matches!(k.as_str(), "host" | "content-length" | "connection" | "keep-alive" | "transfer-encoding") {
            req = req.header(k, v);
        }
    }
    match req.send().await {
        Ok(r) => {
            let status = r.status().as_u16();
            let headers: Vec<(String, String)> = r
                .headers()
                .iter()
                .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
                .collect();
            match r.bytes().await {
                Ok(b) => response(status, &headers, &b),
                Err(e) => response(502, &[], format!("{{\"error\":\"upstream body: {e}\"}}").as_bytes()),
            }
        }
        Err(e) => response(502, &[], format!("{{\"error\":\"upstream: {e}\"}}").as_bytes()),
    }
}

fn response(status: u16, headers: &[(String, String)], body: &[u8]) -> Vec<u8> {
    let reason = match status {
        200 => "OK",
        400 => "Bad Request",
        401 => "Unauthorized",
        404 => "Not Found",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        _ => "Status",
    };
    let mut out = format!("HTTP/1.1 {status} {reason}\r\n").into_bytes();
    let mut has_type = false;
    for (k, v) in headers {
        if matches!(k.as_str(), "content-length" | "transfer-encoding" | "connection" | "keep-alive") {
            continue;
        }
        has_type |= k == "content-type";
        out.extend_from_slice(format!("{k}: {v}\r\n").as_bytes());
    }
    if !has_type {
        out.extend_from_slice(b"content-type: application/json\r\n");
    }
    out.extend_from_slice(format!("content-length: {}\r\n\r\n", body.len()).as_bytes());
    out.extend_from_slice(body);
    out
}
