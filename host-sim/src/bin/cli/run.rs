//! `host-sim run`: one request through a filter, printed as a JSON transcript.
//!
//! The flags are read into [`RunArgs`], then validated into a [`RunConfig`] (every file read
//! and parsed, the hash checked) before anything runs; the library's
//! [`host_sim::scenario::run_scenario`] does the rest.

use super::{pretty_json, print_stdout, read_input, Failure};
use anyhow::anyhow;
use clap::{Args, ValueEnum};
use host_sim::scenario::{run_scenario, Clusters, ScenarioOptions};
use host_sim::transcript::{CallResponseFile, RequestFile};
use host_sim::{Engine, EngineConfig, Profile};
use sha2::{Digest, Sha256};
use std::path::PathBuf;

/// Flags of `host-sim run`.
#[derive(Debug, Args)]
#[command(after_long_help = RUN_HELP)]
pub struct RunArgs {
    /// Which host to behave like.
    #[arg(long, value_enum, value_name = "PROFILE")]
    pub profile: ProfileArg,

    /// The filter module (`.wasm`; WebAssembly text is accepted too).
    #[arg(long, value_name = "FILE")]
    pub filter: PathBuf,

    /// Plugin configuration, passed verbatim to `proxy_on_configure` [default: empty].
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,

    /// The request to send (JSON; see --help).
    #[arg(long, value_name = "FILE")]
    pub request: PathBuf,

    /// The answer to the filter's next HTTP call (JSON; see --help). Repeat it, in the order the
    /// calls are made.
    #[arg(long = "http-call-response", value_name = "FILE")]
    pub http_call_responses: Vec<PathBuf>,

    /// Refuse to run a module whose sha256 is not this (64 hex digits): exit code 2.
    #[arg(long, value_name = "HEX")]
    pub sha256: Option<String>,

    /// An Envoy cluster the filter may call (repeatable); calls to other names get
    /// BAD_ARGUMENT. Without any --cluster, every upstream name the filter uses is taken as a
    /// configured cluster. Kong ignores it (its calls take host:port).
    #[arg(long = "cluster", value_name = "NAME")]
    pub clusters: Vec<String>,

    /// The root id of the plugin's root context (Envoy `root_id`) [default: empty].
    #[arg(long, value_name = "ID")]
    pub root_id: Option<String>,

    /// nginx's client_body_buffer_size for the Kong profile (e.g. 8k, 64k; Kong's
    /// nginx_http_client_body_buffer_size): a larger request body is buffered to a file the
    /// filter cannot read, as in Kong [default: 8k].
    #[arg(long, value_name = "SIZE", value_parser = host_sim::serve::config::parse_nginx_size)]
    pub client_body_buffer_size: Option<usize>,
}

const RUN_HELP: &str = r#"Request file:
  {"headers":[[":method","POST"],[":path","/p?x=1"],[":authority","h"]],
   "body":"...","body_base64":false,"trailers":[]}
  "body_chunks":["...","..."] instead of "body" sends the body in chunks.

HTTP call response file:
  {"status":200,"headers":[["content-type","application/json"]],"body":"...","body_base64":false}
  or {"failure":"timeout"} / {"failure":"broken_connection"} / {"failure":"reset"}

Order: root context (configure), request headers, body, trailers; then each pending HTTP call,
oldest first, gets the next response file (calls made while answering get the following ones);
a call left without one stays "unanswered" and is cancelled when the stream ends. The
transcript (stdout) has configure_ok, actions, http_calls, local_response, forwarded_upstream,
upstream_request, logs and trap. Bodies are UTF-8 text, or base64 with body_base64: true."#;

/// `--profile` values.
#[derive(Debug, Clone, Copy, ValueEnum)]
pub enum ProfileArg {
    /// Envoy (envoy.filters.http.wasm on proxy-wasm-cpp-host).
    Envoy,
    /// Kong 3.x (ngx_wasm_module).
    Kong,
}

impl From<ProfileArg> for Profile {
    fn from(p: ProfileArg) -> Profile {
        match p {
            ProfileArg::Envoy => Profile::Envoy,
            ProfileArg::Kong => Profile::Kong,
        }
    }
}

/// Validated inputs of a run: every file read and parsed.
struct RunConfig {
    filter_name: String,
    filter_bytes: Vec<u8>,
    options: ScenarioOptions,
    request: RequestFile,
    responses: Vec<CallResponseFile>,
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
        let profile = Profile::from(self.profile);
        if profile == Profile::Kong && !self.clusters.is_empty() {
            tracing::warn!("--cluster has no effect with --profile kong (Kong calls take host:port)");
        }

        let filter_name = self.filter.display().to_string();
        let filter_bytes = read_input(&self.filter)?;
        if let Some(expected) = expected {
            let actual = hex::encode(Sha256::digest(&filter_bytes));
            if actual != expected {
                return Err(Failure::usage(anyhow!(
                    "refusing {filter_name}: its sha256 is {actual}, not {expected}"
                )));
            }
        }
        let configuration = match &self.config {
            Some(path) => read_input(path)?,
            None => Vec::new(),
        };
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

        let mut options = ScenarioOptions::new(profile);
        options.configuration = configuration;
        options.root_id = self.root_id.unwrap_or_default();
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
            request,
            responses,
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
    let module = engine
        .load_bytes(&config.filter_bytes)
        // Whatever stops a module loading is a fault of the file: an input error.
        .map_err(|e| Failure::usage(e).context(&config.filter_name))?;
    let transcript =
        run_scenario(&module, &config.options, &config.request, &config.responses).map_err(Failure::runtime)?;
    print_stdout(&pretty_json(&transcript).map_err(Failure::runtime)?)
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
