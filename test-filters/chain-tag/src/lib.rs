//! chain-tag: a proxy-wasm filter for host-sim's filter-chain tests (Kong filter chains, one
//! instance per module shared by every filter of that module). Several copies of it, configured
//! differently, run in one chain and say what each saw.
//!
//! Plugin configuration (per root context, whitespace-separated tokens):
//! - `name=<n>`: the filter's tag (default `tag`).
//! - `answer=request_headers` / `answer=request_body`: answer with a local reply (200, body
//!   `answered by <n>`, header `x-answered-by: <n>`) from that callback.
//! - `pause=<host:port>`: `on_http_request_headers` calls out (`GET /callout` to that upstream)
//!   and pauses; the call's answer resumes the request.
//! - `pause_body=<host:port>`: the same from `on_http_request_body`.
//! - `call=<host:port>`: `on_http_request_headers` calls out the same way but continues; with
//!   `answer=call_response` the call's answer is answered with the local reply, by then from a
//!   filter the chain has already passed.
//! - `refuse=always`: `on_configure` returns false; `refuse=when_recreated`: only on a root
//!   context re-created on a fresh instance after a trap (Kong calls no `on_vm_start` there, so
//!   none has run on it).
//!
//! Request callbacks: the request header `x-chain` gets `<n>` appended (comma-separated), so a
//! later filter sees what an earlier one did; the request body gets `.<n>` appended (written
//! from the body's end, which both hosts append). A request
//! with `x-trap: <n>` makes the filter named `<n>` trap in `on_http_request_headers`.
//!
//! `on_http_response_headers` appends `<n>` to the response header `x-response-chain` and adds
//! `x-<n>-saw-request` (the `x-chain` value it saw, `-` for none, `never` when its request
//! headers callback did not run), `x-<n>-saw-body` (the body it saw, when its body callback ran),
//! `x-<n>-saw-status`, `x-<n>-root` (its root context id), `x-<n>-seen` (how many streams every
//! root of this instance had created when this one began: the instance's count, not the root's),
//! `x-<n>-vm-starts` and `x-<n>-configures` (the instance's `on_vm_start` / `on_configure` calls)
//! `x-<n>-logs` (the instance's stream `on_log` calls so far) and `x-<n>-ends` (the instance's
//! last 8 stream ends, oldest first, comma-separated: `log:<n>` for an `on_log`, `delete:<n>` for
//! an `on_delete`).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};
use std::cell::{Cell, RefCell};
use std::time::Duration;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|context_id| Box::new(TagRoot { id: context_id, config: Config::default() }));
}}

thread_local! {
    /// Streams created on this instance, by any root.
    static STREAMS: Cell<u64> = const { Cell::new(0) };
    static VM_STARTS: Cell<u64> = const { Cell::new(0) };
    static CONFIGURES: Cell<u64> = const { Cell::new(0) };
    static LOGS: Cell<u64> = const { Cell::new(0) };
    static ENDS: RefCell<Vec<String>> = const { RefCell::new(Vec::new()) };
}

/// Notes a stream end in [`ENDS`], keeping the last 8.
fn note_end(what: String) {
    ENDS.with(|ends| {
        let mut ends = ends.borrow_mut();
        if ends.len() == 8 {
            ends.remove(0);
        }
        ends.push(what);
    });
}

#[derive(Clone, Default)]
struct Config {
    name: String,
    answer: Option<String>,
    pause: Option<String>,
    call: Option<String>,
    pause_body: Option<String>,
    refuse: Option<String>,
}

impl Config {
    fn parse(text: &str) -> Config {
        let mut config = Config {
            name: "tag".into(),
            ..Config::default()
        };
        for token in text.split_whitespace() {
            match token.split_once('=') {
                Some(("name", name)) => config.name = name.to_string(),
                Some(("answer", at)) => config.answer = Some(at.to_string()),
                Some(("pause", upstream)) => config.pause = Some(upstream.to_string()),
                Some(("call", upstream)) => config.call = Some(upstream.to_string()),
                Some(("pause_body", upstream)) => config.pause_body = Some(upstream.to_string()),
                Some(("refuse", when)) => config.refuse = Some(when.to_string()),
                _ => {}
            }
        }
        config
    }
}

struct TagRoot {
    id: u32,
    config: Config,
}

impl Context for TagRoot {}

impl RootContext for TagRoot {
    fn on_vm_start(&mut self, _size: usize) -> bool {
        VM_STARTS.with(|n| n.set(n.get() + 1));
        true
    }

    fn on_configure(&mut self, _size: usize) -> bool {
        let text = self
            .get_plugin_configuration()
            .map(|bytes| String::from_utf8_lossy(&bytes).into_owned())
            .unwrap_or_default();
        self.config = Config::parse(&text);
        CONFIGURES.with(|n| n.set(n.get() + 1));
        match self.config.refuse.as_deref() {
            Some("always") => false,
            Some("when_recreated") => VM_STARTS.with(Cell::get) > 0,
            _ => true,
        }
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        STREAMS.with(|n| n.set(n.get() + 1));
        Some(Box::new(Tag {
            root: self.id,
            config: self.config.clone(),
            seen: STREAMS.with(Cell::get),
            saw_request: None,
            saw_body: None,
        }))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}

struct Tag {
    root: u32,
    config: Config,
    seen: u64,
    saw_request: Option<String>,
    saw_body: Option<String>,
}

impl Tag {
    /// `GET /callout` to `upstream` (a 5 s timeout); whether the call went out.
    fn call_out(&self, upstream: &str) -> bool {
        let headers = vec![(":method", "GET"), (":path", "/callout"), (":authority", upstream)];
        self.dispatch_http_call(upstream, headers, None, vec![], Duration::from_secs(5))
            .is_ok()
    }

    fn answer(&mut self) -> Action {
        let name = self.config.name.clone();
        self.send_http_response(
            200,
            vec![("x-answered-by", name.as_str())],
            Some(format!("answered by {name}").as_bytes()),
        );
        Action::Pause
    }
}

/// The SDK drops a context at `proxy_on_delete`.
impl Drop for Tag {
    fn drop(&mut self) {
        note_end(format!("delete:{}", self.config.name));
    }
}

impl Context for Tag {
    fn on_http_call_response(&mut self, _token: u32, _headers: usize, _body: usize, _trailers: usize) {
        if self.config.call.is_some() && self.config.answer.as_deref() == Some("call_response") {
            self.answer();
            return;
        }
        let _ = hostcalls::resume_http_request();
    }
}

impl HttpContext for Tag {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        if self.get_http_request_header("x-trap").as_deref() == Some(self.config.name.as_str()) {
            core::arch::wasm32::unreachable();
        }
        let chain = self.get_http_request_header("x-chain");
        let appended = match &chain {
            Some(before) => format!("{before},{}", self.config.name),
            None => self.config.name.clone(),
        };
        self.saw_request = Some(chain.unwrap_or_else(|| "-".into()));
        self.set_http_request_header("x-chain", Some(&appended));
        if self.config.answer.as_deref() == Some("request_headers") {
            return self.answer();
        }
        if let Some(upstream) = self.config.pause.clone() {
            if self.call_out(&upstream) {
                return Action::Pause;
            }
        }
        if let Some(upstream) = self.config.call.clone() {
            self.call_out(&upstream);
        }
        Action::Continue
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        let body = self.get_http_request_body(0, body_size).unwrap_or_default();
        self.saw_body = Some(String::from_utf8_lossy(&body).into_owned());
        let suffix = format!(".{}", self.config.name);
        self.set_http_request_body(body_size, 0, suffix.as_bytes());
        if self.config.answer.as_deref() == Some("request_body") {
            return self.answer();
        }
        if let Some(upstream) = self.config.pause_body.clone() {
            if self.call_out(&upstream) {
                return Action::Pause;
            }
        }
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let name = self.config.name.clone();
        let chain = match self.get_http_response_header("x-response-chain") {
            Some(before) => format!("{before},{name}"),
            None => name.clone(),
        };
        self.set_http_response_header("x-response-chain", Some(&chain));
        let saw_request = self.saw_request.clone().unwrap_or_else(|| "never".into());
        self.add_http_response_header(&format!("x-{name}-saw-request"), &saw_request);
        if let Some(body) = self.saw_body.clone() {
            self.add_http_response_header(&format!("x-{name}-saw-body"), &body);
        }
        let status = self
            .get_http_response_header(":status")
            .unwrap_or_else(|| "none".into());
        self.add_http_response_header(&format!("x-{name}-saw-status"), &status);
        self.add_http_response_header(&format!("x-{name}-root"), &self.root.to_string());
        self.add_http_response_header(&format!("x-{name}-seen"), &self.seen.to_string());
        let vm_starts = VM_STARTS.with(Cell::get).to_string();
        self.add_http_response_header(&format!("x-{name}-vm-starts"), &vm_starts);
        let configures = CONFIGURES.with(Cell::get).to_string();
        self.add_http_response_header(&format!("x-{name}-configures"), &configures);
        let logs = LOGS.with(Cell::get).to_string();
        self.add_http_response_header(&format!("x-{name}-logs"), &logs);
        let ends = ENDS.with(|ends| ends.borrow().join(","));
        self.add_http_response_header(&format!("x-{name}-ends"), &ends);
        Action::Continue
    }

    fn on_log(&mut self) {
        LOGS.with(|n| n.set(n.get() + 1));
        note_end(format!("log:{}", self.config.name));
    }
}
