//! `host-sim info`: what a module is (with the version it records in its `version` custom
//! section, as the kafka-upstream filter does) and what each host would make of its imports:
//! those it cannot link at all, and, among the host functions it lacks, those a code path calls
//! (the call graph of [`host_sim::reachability`]) apart from those only imported.

use super::{load_module, pretty_json, print_stdout, read_input, Failure};
use clap::Args;
use host_sim::reachability;
use host_sim::transcript::ModuleReport;
use host_sim::{Engine, EngineConfig};
use serde::Serialize;
use std::fmt::Write as _;
use std::path::PathBuf;

/// Flags of `host-sim info`.
#[derive(Debug, Args)]
pub struct InfoArgs {
    /// The module: a `.wasm` file (WebAssembly text is accepted too).
    #[arg(value_name = "MODULE")]
    pub module: PathBuf,

    /// Print JSON instead of text.
    #[arg(long)]
    pub json: bool,
}

/// The JSON of `info --json`: the file name, then the library's report.
#[derive(Serialize)]
struct InfoJson<'a> {
    file: String,
    #[serde(flatten)]
    report: &'a ModuleReport,
}

/// Loads the module (through the precompiled cache `run` uses) and prints its report.
pub fn run(args: InfoArgs) -> Result<(), Failure> {
    let bytes = read_input(&args.module)?;
    let engine = Engine::new(EngineConfig::default()).map_err(Failure::runtime)?;
    let name = args.module.display().to_string();
    let module = load_module(&engine, &bytes, &name)?;
    // wasmtime accepted the module, so text converts; the call graph reads the binary.
    let binary = wat::parse_bytes(&bytes).map_err(|e| Failure::usage(anyhow::anyhow!("{name}: {e}")))?;
    let reach = reachability::analyze(&binary)
        .map_err(|e| Failure::usage(anyhow::anyhow!("{name}: reading the code section: {e}")))?;
    let report = ModuleReport::new(module.info(), reach);
    let text = if args.json {
        let json = InfoJson {
            file: name,
            report: &report,
        };
        pretty_json(&json).map_err(Failure::runtime)?
    } else {
        render_text(&name, &report)
    };
    print_stdout(&text)
}

fn render_text(name: &str, report: &ModuleReport) -> String {
    let info = &report.info;
    let mut out = String::new();
    let _ = writeln!(out, "{name}");
    let _ = writeln!(out, "  size:    {} bytes", info.size);
    let _ = writeln!(out, "  sha256:  {}", info.sha256);
    let _ = writeln!(
        out,
        "  version: {}",
        info.version
            .as_deref()
            .unwrap_or("unknown (no `version` custom section)")
    );
    let _ = writeln!(out, "  abi:     {}", info.abi_version.as_deref().unwrap_or("none"));
    let _ = writeln!(out, "exports ({}):", info.exports.len());
    for item in &info.exports {
        let _ = writeln!(out, "  {item}");
    }
    let reach = &report.reachability;
    let _ = writeln!(
        out,
        "imports ({}; reachable = a code path from an export or the start function calls it):",
        info.imports.len()
    );
    let width = info.imports.iter().map(|i| i.chars().count()).max().unwrap_or(0);
    for item in &info.imports {
        let verdict = match reach.reach_of(item) {
            Some(r) => format!("reachable from {}", r.from.as_deref().unwrap_or("a root")),
            None if reach.is_reachable(item) == Some(false) => "imported only".to_string(),
            None => "not in the call graph".to_string(),
        };
        let _ = writeln!(out, "  {item:<width$}  {verdict}");
    }
    let _ = writeln!(
        out,
        "call graph: {} of {} functions reachable; indirect calls may reach {}",
        reach.reachable_functions,
        reach.functions,
        if reach.indirect_calls_typed {
            "every referenced function of the call's signature"
        } else {
            "every referenced function (types too rich to match by signature)"
        }
    );
    let _ = writeln!(
        out,
        "each host (an import it cannot link stops the module loading; a host function it lacks traps when called):"
    );
    for (profile, host) in &report.hosts {
        let _ = writeln!(out, "  {profile}:");
        let _ = writeln!(
            out,
            "    cannot link (the module does not load):   {}",
            list_or_none(&host.cannot_link)
        );
        let reachable: Vec<String> = host
            .reachable_unimplemented
            .iter()
            .map(
                |f| match reach.reach_of(&format!("env.{f}")).and_then(|r| r.from.as_deref()) {
                    Some(from) => format!("{f} (from {from})"),
                    None => f.clone(),
                },
            )
            .collect();
        let _ = writeln!(
            out,
            "    reachable (will trap if that path runs):  {}",
            list_or_none(&reachable)
        );
        let _ = writeln!(
            out,
            "    imported only (never called):             {}",
            list_or_none(&host.imported_only_unimplemented)
        );
    }
    let _ = writeln!(
        out,
        "imports host-sim does not know (linked as traps): {}",
        list_or_none(&report.unknown_imports)
    );
    out
}

fn list_or_none(list: &[String]) -> String {
    if list.is_empty() {
        "none".to_string()
    } else {
        list.join(", ")
    }
}
