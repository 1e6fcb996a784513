//! `host-sim run`: one request through a filter, printed as a JSON transcript.
//!
//! The flags are read into [`RunArgs`], then validated into a [`RunConfig`] (every file read
//! and parsed, the hash checked) before anything runs; the library's
//! [`host_sim::scenario::run_scenario`] does the rest.

use super::{load_module, pretty_json, print_stdout, read_input, rest_record, Failure};
use anyhow::anyhow;
use clap::Args;
use host_sim::profile::CalloutUpstream;
use host_sim::scenario::{run_scenario, Clusters, ScenarioInput, ScenarioOptions};
use host_sim::transcript::{CallResponseFile, GrpcResponseFile, RequestFile, Transcript, UpstreamResponseFile};
use host_sim::{Engine, EngineConfig, Profile};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Flags of `host-sim run`.
#[derive(Debug, Args)]
#[command(after_long_help = RUN_HELP)]
pub struct RunArgs {
    #[command(flatten)]
    pub filter: FilterArgs,

    /// The request to send (JSON; see --help).
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,

    /// The answer to the filter's next HTTP call (JSON; see --help). Repeat it, in the order the
    /// calls are made.
    #[arg(long = "http-call-response", value_name = "FILE")]
    pub http_call_responses: Vec<PathBuf>,

    /// The answer to the filter's next gRPC call or stream (JSON; see --help). Repeat it, in
    /// the order the calls are made.
    #[arg(long = "grpc-call-response", value_name = "FILE")]
    pub grpc_call_responses: Vec<PathBuf>,

    /// The upstream's response (JSON; see --help), sent through the filter's response
    /// callbacks once the whole request went upstream.
    #[arg(long, value_name = "FILE")]
    pub upstream_response: Option<PathBuf>,

    /// Move the virtual clock forward by this many milliseconds after the request, firing
    /// ticks and call timeouts (repeatable: one step each, in order; at most a day per step).
    #[arg(long = "advance-ms", value_name = "N", value_parser = clap::value_parser!(u64).range(0..=MAX_STEP_MS))]
    pub advance_ms: Vec<u64>,

    /// Refuse to run a module whose sha256 is not this (64 hex digits): exit code 2.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,

    /// An Envoy cluster the filter may call (repeatable); calls to other names get
    /// BAD_ARGUMENT. Without any --cluster, every upstream name the filter uses is taken as a
    /// configured cluster. Kong ignores it (its calls take host:port).
    #[arg(long = "cluster", value_name = "NAME")]
    pub clusters: Vec<String>,

    /// Print the transcript (exit code 0) even when the filter rejects its configuration;
    /// without it, a rejected configuration is exit code 1 with the filter's reasons on stderr.
    #[arg(long)]
    pub allow_rejected_config: bool,

    /// nginx's client_body_buffer_size for the Kong profile (e.g. 8k, 64k; Kong's
    /// nginx_http_client_body_buffer_size): a larger request body is buffered to a file the
    /// filter cannot read, as in Kong [default: 8k].
    #[arg(long, value_name = "SIZE", value_parser = host_sim::serve::config::parse_nginx_size)]
    pub client_body_buffer_size: Option<usize>,
}

/// The longest `--advance-ms` step: a day. Longer stretches are several steps, so a filter
/// with a 1 ms tick cannot keep one step running for hours.
const MAX_STEP_MS: u64 = 86_400_000;

/// The flags that name the filter, its host and its configuration, the same for `run` and
/// `check`.
#[derive(Debug, Args)]
pub struct FilterArgs {
    /// Which host to behave like.
    #[arg(long, value_enum, value_name = "PROFILE", default_value = "envoy")]
    pub profile: Profile,

    /// The filter module (`.wasm`; WebAssembly text is accepted too).
    #[arg(long, value_name = "FILE")]
    pub filter: PathBuf,

    /// Plugin configuration, passed verbatim to `proxy_on_configure` [default: empty].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The root id of the plugin's root context (Envoy `root_id`) [default: empty].
    #[arg(long, value_name = "ID", default_value = "")]
    pub root_id: String,
}

impl FilterArgs {
    /// The configuration's bytes (empty without --config).
    pub fn configuration(&self) -> Result<Vec<u8>, Failure> {
        match &self.config {
            Some(path) => read_input(path),
            None => Ok(Vec::new()),
        }
    }
}

const RUN_HELP: &str = r#"Request file:
  {"headers":[[":method","POST"],[":path","/p?x=1"],[":authority","h"]],
   "body":"...","body_base64":false,"trailers":[]}
  "body_chunks":["...","..."] instead of "body" sends the body in chunks.

HTTP call response file (--http-call-response):
  {"status":200,"headers":[["content-type","application/json"]],"body":"...","body_base64":false}
  or {"failure":"timeout"} / {"failure":"broken_connection"} / {"failure":"reset"}

gRPC call response file (--grpc-call-response), every key optional:
  {"initial_metadata":[["k","v"]],"messages":["..."],"messages_base64":false,
   "trailing_metadata":[["k","v"]],"status":0,"status_message":""}
  A stream gets each part given through its callback; "status" closes it (without it the
  stream stays open). A unary call gets only its outcome, as in Envoy: the first message
  (proxy_on_grpc_receive) when "status" is 0 or absent, else proxy_on_grpc_close.

Upstream response file (--upstream-response):
  {"status":200,"headers":[["content-type","text/plain"]],"body":"...","body_base64":false,
   "trailers":[],"chunk_size":4}
  "chunk_size" (bytes per chunk) or "chunk_sizes":[3,5] splits the body into several
  on_http_response_body calls; headers go to the filter as given (content-length included).

Order: root context (configure), request headers, body, trailers. Then the stream settles:
each pending call, oldest first (HTTP and gRPC in the order made), gets the next response file
of its kind (calls made while answering get the following ones); once the whole request went
upstream without a local response, the upstream response goes through on_http_response_headers,
_body (per chunk) and _trailers; once the client has its whole response the stream ends
(on_log/on_done/on_delete in the profile's order). Then each --advance-ms step moves the virtual
clock, firing ticks and HTTP call timeouts in time order, and the stream settles again: calls
made during a step, or still pending, take the next unused responses at the end of the step. A
call left without a response stays "unanswered" (or "timed_out" if a step passed its deadline;
gRPC calls do not time out in run); a stream not ended by then ends after the last step,
cancelling its calls.

The transcript (stdout) has configure_ok, actions, http_calls, grpc_calls, local_response,
forwarded_upstream, upstream_request, upstream_response (used, or why not), client_response
(what the client got: source, status, headers, body after the filter's edits, complete,
paused_in, reset), time_steps (per --advance-ms: ticks, timeouts, calls made, actions, logs,
local_response), logs and trap. Bodies are UTF-8 text, or base64 with body_base64: true. An
HTTP call that is a Kafka REST Proxy produce request (v2 or v3) also has rest_proxy_produce: its
topic and records with key and value decoded.

Exit codes: 0 the transcript was printed (also when the filter trapped: the transcript says so);
1 the filter rejected its configuration (its warn/error lines on stderr; --allow-rejected-config
prints the transcript instead) or host-sim failed; 2 usage or input error."#;

/// Validated inputs of a run: every file read and parsed.
struct RunConfig {
    filter_name: String,
    filter_bytes: Vec<u8>,
    options: ScenarioOptions,
    input: ScenarioInput,
    allow_rejected_config: bool,
}

impl RunArgs {
    /// Checks the flags and reads every input; errors are input errors (exit code 2).
    fn validate(self) -> Result<RunConfig, Failure> {
        let expected = self.sha256.as_deref().map(parse_sha256).transpose()?;
        if let Some(empty) = self.clusters.iter().find(|c| c.is_empty()) {
            return Err(Failure::usage(anyhow!(
                "--cluster {empty:?}: a cluster name cannot be empty"
            )));
        }
        let profile = self.filter.profile;
        if profile.callout_upstream() == CalloutUpstream::HostPort && !self.clusters.is_empty() {
            tracing::warn!("--cluster has no effect with --profile {profile} (its calls take host:port)");
        }

        let filter_name = self.filter.filter.display().to_string();
        let filter_bytes = read_input(&self.filter.filter)?;
        if let Some(expected) = expected {
            let actual = hex::encode(Sha256::digest(&filter_bytes));
            if actual != expected {
                return Err(Failure::usage(anyhow!(
                    "refusing {filter_name}: its sha256 is {actual}, not {expected}"
                )));
            }
        }
        let configuration = self.filter.configuration()?;
        let request = RequestFile::from_json(&read_input(&self.request)?)
            .map_err(|e| Failure::usage(anyhow!("{}: not a valid request file: {e}", self.request.display())))?;
        let responses = self
            .http_call_responses
            .iter()
            .map(|path| {
                CallResponseFile::from_json(&read_input(path)?).map_err(|e| {
                    Failure::usage(anyhow!("{}: not a valid HTTP call response file: {e}", path.display()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let grpc_responses = self
            .grpc_call_responses
            .iter()
            .map(|path| {
                GrpcResponseFile::from_json(&read_input(path)?).map_err(|e| {
                    Failure::usage(anyhow!("{}: not a valid gRPC call response file: {e}", path.display()))
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let upstream_response = self
            .upstream_response
            .as_ref()
            .map(|path| {
                UpstreamResponseFile::from_json(&read_input(path)?)
                    .map_err(|e| Failure::usage(anyhow!("{}: not a valid upstream response file: {e}", path.display())))
            })
            .transpose()?;

        let mut options = ScenarioOptions::new(profile);
        options.configuration = configuration;
        options.root_id = self.filter.root_id;
        if let Some(size) = self.client_body_buffer_size {
            options.vm.client_body_buffer_bytes = size;
        }
        options.clusters = if self.clusters.is_empty() {
            Clusters::Any
        } else {
            Clusters::Only(self.clusters)
        };
        Ok(RunConfig {
            filter_name,
            filter_bytes,
            options,
            input: ScenarioInput {
                request,
                http_call_responses: responses,
                grpc_call_responses: grpc_responses,
                upstream_response,
                advance_ms: self.advance_ms,
            },
            allow_rejected_config: self.allow_rejected_config,
        })
    }
}

fn parse_sha256(text: &str) -> Result<String, Failure> {
    let hex = text.trim().to_ascii_lowercase();
    if hex.len() != 64 || !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(Failure::usage(anyhow!("--sha256 {text:?}: expected 64 hex digits")));
    }
    Ok(hex)
}

/// Validates, loads the module, runs the scenario and prints the transcript.
pub fn run(args: RunArgs) -> Result<(), Failure> {
    let config = args.validate()?;
    let engine = Engine::new(EngineConfig::default()).map_err(Failure::runtime)?;
    let module = load_module(&engine, &config.filter_bytes, &config.filter_name)?;
    let transcript = run_scenario(&module, &config.options, &config.input).map_err(Failure::runtime)?;
    if let (Some(why), false) = (rejection(&transcript), config.allow_rejected_config) {
        for log in transcript
            .logs
            .iter()
            .filter(|l| PROBLEM_LEVELS.contains(&l.level.as_str()))
        {
            eprintln!("[{}] {}", log.level, log.message);
        }
        return Err(Failure::runtime(anyhow!(
            "{}: configuration rejected: {why} (--allow-rejected-config prints the transcript anyway)",
            config.filter_name
        )));
    }
    print_stdout(&pretty_json(&with_decoded_records(&transcript)?).map_err(Failure::runtime)?)
}

/// The transcript as JSON, each HTTP call that is a Kafka REST Proxy produce request with a
/// `rest_proxy_produce` member: its topic and records, decoded (see [`rest_record`]).
fn with_decoded_records(transcript: &Transcript) -> Result<serde_json::Value, Failure> {
    let mut json = serde_json::to_value(transcript).map_err(Failure::runtime)?;
    let Some(calls) = json.get_mut("http_calls").and_then(serde_json::Value::as_array_mut) else {
        return Ok(json);
    };
    for (call, json_call) in transcript.http_calls.iter().zip(calls) {
        let header = |name: &str| host_sim::abi::find_header(&call.headers, name).map(String::as_str);
        let (Some(path), Ok(body)) = (header(":path"), call.body_bytes()) else {
            continue;
        };
        if let (Some(decoded), Some(object)) = (
            rest_record::decode_produce(path, header("content-type"), &body),
            json_call.as_object_mut(),
        ) {
            object.insert("rest_proxy_produce".into(), decoded);
        }
    }
    Ok(json)
}

/// Log levels whose lines explain a rejection.
const PROBLEM_LEVELS: &[&str] = &["warn", "error", "critical"];

/// Why the filter did not take its configuration, when it returned false; a trap is not a
/// rejection (the transcript reports it, exit code 0).
fn rejection(transcript: &Transcript) -> Option<&'static str> {
    if transcript.trap.is_some() {
        None
    } else if !transcript.vm_start_ok {
        Some("proxy_on_vm_start returned false")
    } else if !transcript.configure_ok {
        Some("proxy_on_configure returned false")
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sha256_flag_is_checked() {
        let ok = "AB".repeat(32);
        assert_eq!(parse_sha256(&ok).unwrap(), "ab".repeat(32));
        assert!(parse_sha256("abc").is_err());
        assert!(parse_sha256(&"zz".repeat(32)).is_err());
    }
}
