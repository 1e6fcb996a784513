//! The command line: clap definitions, the edge where errors become one line and an exit code,
//! and the subcommands (each in its own module, over the library).

mod check;
mod completions;
mod info;
mod rest_proxy;
mod rest_record;
mod run;
mod serve;

use anyhow::anyhow;
use clap::{Parser, Subcommand};
use std::io::Write;
use std::path::Path;

/// Exit code of a runtime failure: the host could not run the filter or serve (an address in
/// use), or the filter rejected its configuration (`check`, `run`).
pub const EXIT_RUNTIME: u8 = 1;
/// Exit code of a usage or input error (bad flag, unreadable or invalid file, hash mismatch).
pub const EXIT_USAGE: u8 = 2;

/// Run, test and inspect proxy-wasm (ABI 0.2.1) filters offline, as Envoy or Kong would host
/// them.
#[derive(Debug, Parser)]
#[command(
    name = "host-sim",
    version,
    after_help = "Exit codes: 0 success (also when the filter trapped in a request: the transcript says so), \
                  1 runtime failure (the filter rejected its configuration, an address is in use, ...), \
                  2 usage or input error (bad flag, unreadable or invalid file)."
)]
pub struct Cli {
    /// host-sim's own diagnostics on stderr: a level (off, error, warn, info, debug, trace;
    /// dependencies stay at warn), or a tracing filter such as `warn,wasmtime=debug`. Never
    /// hides the filter's log lines: see --guest-log-level. [default: $RUST_LOG, else warn]
    #[arg(long, global = true, value_name = "LEVEL")]
    pub log_level: Option<String>,

    /// The filter's own log lines (`serve`) shown on stderr at this level and above, each at
    /// its own level under the `guest` target (off, error, warn, info, debug, trace). A
    /// `guest=` directive in --log-level takes precedence.
    #[arg(long, global = true, value_name = "LEVEL", default_value = "info")]
    pub guest_log_level: String,

    #[command(subcommand)]
    pub command: Command,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Describe a module: size, sha256, ABI version, exports, imports, and which imported host
    /// functions each host lacks.
    Info(info::InfoArgs),
    /// Run one request through a filter and print the JSON transcript on stdout.
    Run(run::RunArgs),
    /// Check a configuration: start the filter and configure it as a gateway would, and report
    /// whether it accepted it, with its own reasons.
    Check(check::CheckArgs),
    /// Serve HTTP: every request runs through the filter; callouts are real HTTP requests.
    Serve(Box<serve::ServeArgs>),
    /// Run a Confluent-compatible Kafka REST proxy and Schema Registry (in memory, or bridged to a Kafka broker).
    RestProxy(rest_proxy::RestProxyCommand),
    /// Print a shell completion script (bash, zsh or fish) on stdout.
    Completions(completions::CompletionsArgs),
}

/// An error at the edge: what to print, and the exit code.
#[derive(Debug)]
pub struct Failure {
    /// The exit code ([`EXIT_USAGE`] or [`EXIT_RUNTIME`]).
    pub code: u8,
    /// The error, printed as `host-sim: {error:#}` on one line; `None` when it was already
    /// reported (clap's help for a missing subcommand).
    pub error: Option<anyhow::Error>,
}

impl Failure {
    /// A usage or input error (exit code 2).
    pub fn usage(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            error: Some(error.into()),
        }
    }

    /// A runtime failure (exit code 1).
    pub fn runtime(error: impl Into<anyhow::Error>) -> Failure {
        Failure {
            code: EXIT_RUNTIME,
            error: Some(error.into()),
        }
    }

    /// Prefixes the message with what it is about (`x.wasm: invalid wasm module: ...`).
    pub fn context(self, what: &str) -> Failure {
        Failure {
            code: self.code,
            error: self.error.map(|e| e.context(what.to_string())),
        }
    }
}

/// Parses the command line, sets up diagnostics and runs the subcommand.
pub fn run() -> Result<(), Failure> {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) if !e.use_stderr() => {
            // --help and --version: clap's own output, exit 0.
            let _ = e.print();
            return Ok(());
        }
        Err(e) if e.kind() == clap::error::ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            // Bare `host-sim`: the help, as clap prints it, with the usage exit code.
            let _ = e.print();
            return Err(Failure {
                code: EXIT_USAGE,
                error: None,
            });
        }
        Err(e) => return Err(Failure::usage(anyhow!(clap_error_line(&e)))),
    };
    init_tracing(cli.log_level.as_deref(), &cli.guest_log_level)?;
    match cli.command {
        Command::Info(args) => info::run(args),
        Command::Run(args) => run::run(args),
        Command::Check(args) => check::run(args),
        Command::Serve(args) => serve::run(*args),
        Command::RestProxy(args) => rest_proxy::run(args),
        Command::Completions(args) => completions::run(args),
    }
}

/// clap's error message without its usage block, on one line.
fn clap_error_line(e: &clap::Error) -> String {
    let text = e.render().to_string();
    let mut line = String::new();
    for part in text.lines().map(str::trim).take_while(|l| !l.starts_with("Usage:")) {
        let part = part.strip_prefix("error: ").unwrap_or(part);
        if part.is_empty() {
            continue;
        }
        if !line.is_empty() {
            line.push_str(if line.ends_with(':') { " " } else { "; " });
        }
        line.push_str(part);
    }
    format!("{line} (see --help)")
}

const LEVELS: &[&str] = &["off", "error", "warn", "info", "debug", "trace"];

/// The default filter: warnings, except the Kafka client's, which warns at every retry while
/// the REST proxy waits for a broker (the CLI says once that it is waiting); `--log-level debug`
/// shows them.
const QUIET_DEFAULT: &str = "warn,rskafka=error";

fn init_tracing(level: Option<&str>, guest_level: &str) -> Result<(), Failure> {
    use tracing_subscriber::EnvFilter;
    let guest_level = guest_level.to_ascii_lowercase();
    if !LEVELS.contains(&guest_level.as_str()) {
        return Err(Failure::usage(anyhow!(
            "--guest-log-level {guest_level:?}: expected one of {}",
            LEVELS.join(", ")
        )));
    }
    let filter = match level {
        Some(spec) => {
            // A bare word would be taken as a target name; insist on a level there.
            if !spec.contains(['=', ',']) && !LEVELS.contains(&spec.to_ascii_lowercase().as_str()) {
                return Err(Failure::usage(anyhow!(
                    "--log-level {spec:?}: expected one of {} or a filter like host_sim=debug",
                    LEVELS.join(", ")
                )));
            }
            let directives = match spec.to_ascii_lowercase().as_str() {
                "info" => format!("{QUIET_DEFAULT},host_sim=info"),
                level @ ("debug" | "trace") => format!("warn,host_sim={level}"),
                _ => spec.to_string(),
            };
            with_guest(&directives, &guest_level)
                .parse::<EnvFilter>()
                .map_err(|e| Failure::usage(anyhow!("--log-level {spec:?}: {e}")))?
        }
        None => {
            let base = std::env::var("RUST_LOG").unwrap_or_else(|_| QUIET_DEFAULT.to_string());
            EnvFilter::try_new(with_guest(&base, &guest_level)).unwrap_or_else(|_| EnvFilter::new(QUIET_DEFAULT))
        }
    };
    let _ = tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(filter)
        .try_init();
    Ok(())
}

/// Tracing directives with the guest's level added, unless they set one for `guest` already.
fn with_guest(directives: &str, guest_level: &str) -> String {
    let explicit = directives
        .split(',')
        .any(|d| d.trim().split(['=', '[']).next() == Some("guest"));
    if explicit {
        directives.to_string()
    } else {
        format!("{directives},guest={guest_level}")
    }
}

/// Reads an input file; the error is `cannot read PATH: REASON` (an input error).
pub fn read_input(path: &Path) -> Result<Vec<u8>, Failure> {
    std::fs::read(path).map_err(|e| Failure::usage(anyhow!("cannot read {}: {}", path.display(), io_reason(&e))))
}

/// Loads a module through the engine (and its precompiled cache). Whatever stops a module
/// loading is a fault of the file: an input error, prefixed with its name. A file that is
/// neither binary WebAssembly (`\0asm`) nor WebAssembly text is said to be so, rather than
/// given to the text parser whose complaint would be about text it never was.
pub fn load_module(engine: &host_sim::Engine, bytes: &[u8], name: &str) -> Result<host_sim::Module, Failure> {
    if !looks_like_wasm(bytes) {
        return Err(Failure::usage(anyhow!(
            "{name}: not a WebAssembly module (a .wasm file starts with the bytes \\0asm, WebAssembly text with `(`)"
        )));
    }
    engine.load_bytes(bytes).map_err(|e| Failure::usage(e).context(name))
}

/// Binary WebAssembly, or text whose first token opens a form or a comment (`(`, `;;`).
fn looks_like_wasm(bytes: &[u8]) -> bool {
    if bytes.starts_with(b"\0asm") {
        return true;
    }
    let text = bytes.strip_prefix("\u{feff}".as_bytes()).unwrap_or(bytes);
    match text.iter().position(|b| !b.is_ascii_whitespace()) {
        Some(i) => text[i] == b'(' || text[i..].starts_with(b";;"),
        None => false,
    }
}

/// An I/O error's reason without the `(os error N)` suffix.
fn io_reason(e: &std::io::Error) -> String {
    let text = e.to_string();
    match text.rfind(" (os error ") {
        Some(i) if text.ends_with(')') => text[..i].to_string(),
        _ => text,
    }
}

/// Writes a document to stdout. A closed pipe (`host-sim ... | head`) is not an error.
pub fn print_stdout(text: &str) -> Result<(), Failure> {
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
            Err(Failure::runtime(anyhow!("cannot write to stdout: {}", io_reason(&e))))
        }
        _ => Ok(()),
    }
}

/// Widest line a collapsed array may make in [`pretty_json`].
const INLINE_ARRAY_WIDTH: usize = 100;

/// Pretty JSON, ending with a newline, with arrays of scalars on one line when they are pairs
/// (`[":method", "GET"]`) or short, so header lists read one header a line.
pub fn pretty_json(value: &impl serde::Serialize) -> Result<String, serde_json::Error> {
    let text = serde_json::to_string_pretty(value)?;
    // Pretty output escapes newlines inside strings, so every value line is one text line.
    let lines: Vec<&str> = text.lines().collect();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        if line.ends_with('[') {
            let items: Vec<&str> = lines[i + 1..]
                .iter()
                .map(|l| l.trim())
                .take_while(|l| !l.starts_with(']'))
                .collect();
            let close = lines.get(i + 1 + items.len()).map(|l| l.trim());
            let scalars = items
                .iter()
                .all(|l| !l.ends_with(['[', '{']) && !l.starts_with(['}', '{', '[']));
            if let (Some(close), true, false) = (close, scalars, items.is_empty()) {
                let joined = format!("{line}{}{close}", items.join(" "));
                if items.len() <= 2 || joined.len() <= INLINE_ARRAY_WIDTH {
                    out.push_str(&joined);
                    out.push('\n');
                    i += items.len() + 2;
                    continue;
                }
            }
        }
        out.push_str(line);
        out.push('\n');
        i += 1;
    }
    Ok(out)
}

/// Collapses a multi-line message (a WAT parse error, a wasmtime backtrace) to its first line,
/// keeping a source location (`--> file:line:col`) when there is one.
pub fn one_line(message: &str) -> String {
    let mut lines = message.lines();
    let mut line = lines.next().unwrap_or_default().trim_end().to_string();
    if let Some(at) = lines.find_map(|l| l.trim_start().strip_prefix("--> ")) {
        line.push_str(&format!(" (at {})", at.trim()));
    }
    line
}

/// Prints a panic as one line instead of Rust's report; `main` then exits with code 1.
pub fn install_panic_hook() {
    std::panic::set_hook(Box::new(|info| {
        let payload = info
            .payload()
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| info.payload().downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "panic".into());
        let at = info
            .location()
            .map(|l| format!(" at {}:{}", l.file(), l.line()))
            .unwrap_or_default();
        eprintln!(
            "host-sim: internal error: {}{at} (this is a host-sim bug)",
            one_line(&payload)
        );
    }));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wasm_is_told_from_other_files() {
        assert!(looks_like_wasm(b"\0asm\x01\0\0\0"));
        assert!(looks_like_wasm(b"(module)"));
        assert!(looks_like_wasm(b"\n  ;; a filter\n(module)"));
        assert!(looks_like_wasm("\u{feff}(module)".as_bytes()));
        assert!(!looks_like_wasm(b""));
        assert!(!looks_like_wasm(b"  \n"));
        assert!(!looks_like_wasm(b"this is not wasm"));
        assert!(!looks_like_wasm(b"{\"topic\":\"t\"}"));
        assert!(!looks_like_wasm(b"\x7fELF\x02\x01"));
    }

    #[test]
    fn io_reason_drops_the_os_error_code() {
        let e = std::fs::read("/nonexistent/host-sim-test").unwrap_err();
        assert_eq!(io_reason(&e), "No such file or directory");
    }

    #[test]
    fn one_line_keeps_the_location() {
        let wat = "expected `(`\n     --> <anon>:1:1\n      |\n    1 | x\n      | ^";
        assert_eq!(one_line(wat), "expected `(` (at <anon>:1:1)");
        assert_eq!(one_line("plain"), "plain");
    }

    #[test]
    fn clap_errors_fit_one_line() {
        let e = Cli::try_parse_from(["host-sim", "run", "--profile", "envoy"]).unwrap_err();
        let line = clap_error_line(&e);
        assert!(!line.contains('\n'), "{line}");
        assert!(line.contains("--filter <FILE>"), "{line}");
        let e = Cli::try_parse_from(["host-sim", "run", "--profile", "nginx"]).unwrap_err();
        let line = clap_error_line(&e);
        assert!(line.contains("invalid value 'nginx'"), "{line}");
    }

    #[test]
    fn pretty_json_keeps_pairs_on_one_line() {
        let value = serde_json::json!({
            "headers": [[":method", "GET"], ["x", "a \\\"[quoted]\\\" value"]],
            "empty": [],
            "nested": [{"a": [1, 2, 3]}],
            "trap": null
        });
        let text = pretty_json(&value).unwrap();
        assert!(text.contains("    [\":method\", \"GET\"],\n"), "{text}");
        assert!(text.contains("\"a\": [1, 2, 3]\n"), "{text}");
        assert!(text.contains("\"empty\": []"), "{text}");
        let back: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(back, value);
    }

    #[test]
    fn cli_definition_is_consistent() {
        use clap::CommandFactory;
        Cli::command().debug_assert();
    }
}
