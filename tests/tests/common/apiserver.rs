//! A stand-in for the Kubernetes API server, enough for a client that lists and watches Pods
//! and Services: `GET /api/v1/pods` and `/api/v1/services` answer a `PodList`/`ServiceList`
//! with the current `resourceVersion`; with `?watch=true` (or `1`) the answer is a chunked
//! stream of watch events (`ADDED`, `MODIFIED`, `DELETED`, one JSON object per line) after the
//! `resourceVersion` asked for, kept open until the server stops. Plain HTTP/1.1 on
//! 127.0.0.1, std only; objects are real Kubernetes JSON. Every request is logged, so a test
//! can wait until a client watches.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

/// One change, as a watch stream shows it.
struct Change {
    rv: u64,
    resource: &'static str,
    kind: &'static str,
    object: Value,
}

#[derive(Default)]
struct State {
    rv: u64,
    /// Current objects by resource (`pods`, `services`) and uid.
    objects: BTreeMap<&'static str, BTreeMap<String, Value>>,
    changes: Vec<Change>,
    /// `GET` request lines received.
    requests: Vec<String>,
}

struct Shared {
    state: Mutex<State>,
    changed: Condvar,
    stop: AtomicBool,
}

impl Shared {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The server; it stops (and closes every watch) when dropped.
pub struct ApiServer {
    pub port: u16,
    shared: Arc<Shared>,
    thread: Option<JoinHandle<()>>,
}

impl ApiServer {
    pub fn start() -> ApiServer {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the stand-in API server");
        let port = listener.local_addr().expect("local addr").port();
        listener.set_nonblocking(true).expect("nonblocking");
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            changed: Condvar::new(),
            stop: AtomicBool::new(false),
        });
        let s = shared.clone();
        let thread = std::thread::spawn(move || {
            let mut conns = Vec::new();
            while !s.stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((stream, _)) => {
                        let s = s.clone();
                        conns.push(std::thread::spawn(move || serve(stream, &s)));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
            for c in conns {
                let _ = c.join();
            }
        });
        ApiServer {
            port,
            shared,
            thread: Some(thread),
        }
    }

    /// A kubeconfig (in `dir`) whose current context is this server, with a bearer token.
    pub fn kubeconfig(&self, dir: &Path) -> PathBuf {
        let path = dir.join(format!("kubeconfig-{}", self.port));
        let text = format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: standin\n  cluster:\n    \
             server: http://127.0.0.1:{}\ncontexts:\n- name: standin\n  context:\n    \
             cluster: standin\n    user: tester\ncurrent-context: standin\nusers:\n\
             - name: tester\n  user:\n    token: lab-token\n",
            self.port
        );
        std::fs::write(&path, text).expect("write kubeconfig");
        path
    }

    fn change(&self, resource: &'static str, kind: &'static str, uid: &str, object: Value) {
        let mut st = self.shared.lock();
        st.rv += 1;
        let rv = st.rv;
        let mut object = object;
        object["metadata"]["resourceVersion"] = json!(rv.to_string());
        let objects = st.objects.entry(resource).or_default();
        if kind == "DELETED" {
            objects.remove(uid);
        } else {
            objects.insert(uid.to_string(), object.clone());
        }
        st.changes.push(Change {
            rv,
            resource,
            kind,
            object,
        });
        drop(st);
        self.shared.changed.notify_all();
    }

    /// A running pod with `ip` on `node`, created at `created` (RFC 3339).
    pub fn add_pod(&self, ns: &str, name: &str, uid: &str, ip: &str, node: &str, created: &str) {
        let pod = json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": name, "namespace": ns, "uid": uid, "creationTimestamp": created,
                "labels": {"app": name}
            },
            "spec": {
                "nodeName": node,
                "containers": [{"name": "main", "image": "debian:bookworm-slim"}]
            },
            "status": {
                "phase": "Running", "podIP": ip, "podIPs": [{"ip": ip}],
                "startTime": created
            }
        });
        self.change("pods", "ADDED", uid, pod);
    }

    /// Deletes a pod (the watch shows its last state).
    pub fn delete_pod(&self, uid: &str) {
        let pod = self.shared.lock().objects["pods"][uid].clone();
        self.change("pods", "DELETED", uid, pod);
    }

    pub fn add_service(&self, ns: &str, name: &str, uid: &str, cluster_ip: &str) {
        let svc = json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": name, "namespace": ns, "uid": uid,
                "creationTimestamp": "2026-11-30T09:00:00Z"
            },
            "spec": {
                "type": "ClusterIP", "clusterIP": cluster_ip, "clusterIPs": [cluster_ip],
                "ports": [{"port": 80, "protocol": "TCP", "targetPort": 80}]
            }
        });
        self.change("services", "ADDED", uid, svc);
    }

    /// Waits until a client watches both pods and services (a list was answered and the
    /// watch that follows it opened), at most `timeout`.
    pub fn wait_watched(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            {
                let st = self.shared.lock();
                let watching = |r: &str| {
                    st.requests
                        .iter()
                        .any(|l| l.contains(&format!("/api/v1/{r}?")) && is_watch(l))
                };
                if watching("pods") && watching("services") {
                    return true;
                }
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        false
    }

    /// The request lines received so far.
    pub fn requests(&self) -> Vec<String> {
        self.shared.lock().requests.clone()
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn is_watch(request_line: &str) -> bool {
    query(request_line)
        .iter()
        .any(|(k, v)| k == "watch" && (v == "true" || v == "1"))
}

/// The query parameters of `GET /path?a=b&c=d HTTP/1.1`.
fn query(request_line: &str) -> Vec<(String, String)> {
    let target = request_line.split_whitespace().nth(1).unwrap_or("");
    let Some((_, q)) = target.split_once('?') else {
        return Vec::new();
    };
    q.split('&')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn serve(stream: TcpStream, s: &Shared) {
    let _ = stream.set_nonblocking(false);
    let _ = stream.set_read_timeout(Some(Duration::from_secs(5)));
    let mut reader = BufReader::new(match stream.try_clone() {
        Ok(c) => c,
        Err(_) => return,
    });
    let mut line = String::new();
    if reader.read_line(&mut line).is_err() || line.is_empty() {
        return;
    }
    // The rest of the head.
    loop {
        let mut h = String::new();
        match reader.read_line(&mut h) {
            Ok(0) | Err(_) => return,
            Ok(_) if h == "\r\n" || h == "\n" => break,
            Ok(_) => {}
        }
    }
    let line = line.trim_end().to_string();
    s.lock().requests.push(line.clone());
    let path = line
        .split_whitespace()
        .nth(1)
        .unwrap_or("")
        .split('?')
        .next()
        .unwrap_or("");
    let resource = match path {
        "/api/v1/pods" => "pods",
        "/api/v1/services" => "services",
        _ => {
            let status = json!({
                "kind": "Status", "apiVersion": "v1", "status": "Failure",
                "message": format!("the stand-in serves no {path}"), "reason": "NotFound",
                "code": 404
            });
            return respond(stream, "404 Not Found", &status);
        }
    };
    if is_watch(&line) {
        let since = query(&line)
            .into_iter()
            .find(|(k, _)| k == "resourceVersion")
            .and_then(|(_, v)| v.parse().ok())
            .unwrap_or(0);
        watch(stream, s, resource, since);
    } else {
        let st = s.lock();
        let items: Vec<Value> = st
            .objects
            .get(resource)
            .map(|o| o.values().cloned().collect())
            .unwrap_or_default();
        let kind = if resource == "pods" {
            "PodList"
        } else {
            "ServiceList"
        };
        let list = json!({
            "kind": kind, "apiVersion": "v1",
            "metadata": {"resourceVersion": st.rv.to_string()},
            "items": items
        });
        drop(st);
        respond(stream, "200 OK", &list);
    }
}

fn respond(mut stream: TcpStream, status: &str, body: &Value) {
    let body = body.to_string();
    let _ = write!(
        stream,
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
}

/// A watch: every change of `resource` after `since`, as it happens, until the server stops.
fn watch(mut stream: TcpStream, s: &Shared, resource: &str, since: u64) {
    if stream
        .write_all(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
              Transfer-Encoding: chunked\r\n\r\n",
        )
        .is_err()
    {
        return;
    }
    let mut sent = since;
    loop {
        let events: Vec<(u64, String)> = {
            let mut st = s.lock();
            loop {
                if s.stop.load(Ordering::Relaxed) {
                    let _ = stream.write_all(b"0\r\n\r\n");
                    return;
                }
                let ready: Vec<(u64, String)> = st
                    .changes
                    .iter()
                    .filter(|c| c.rv > sent && c.resource == resource)
                    .map(|c| {
                        let line = json!({"type": c.kind, "object": c.object}).to_string();
                        (c.rv, line)
                    })
                    .collect();
                if !ready.is_empty() {
                    break ready;
                }
                st = s
                    .changed
                    .wait_timeout(st, Duration::from_millis(200))
                    .unwrap_or_else(|e| e.into_inner())
                    .0;
            }
        };
        for (rv, line) in events {
            let chunk = format!("{:x}\r\n{line}\n\r\n", line.len() + 1);
            if stream.write_all(chunk.as_bytes()).is_err() {
                return;
            }
            sent = rv;
        }
        let _ = stream.flush();
    }
}
