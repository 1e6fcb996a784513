//! `host-sim info`: what a module is (with the version it records in its `version` custom
//! section, as the kafka-upstream filter does) and what each host would make of its imports.

use super::{load_module, pretty_json, print_stdout, read_input, Failure};
use clap::Args;
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
    let report = ModuleReport::new(module.info());
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
    for (title, list) in [("exports", &info.exports), ("imports", &info.imports)] {
        let _ = writeln!(out, "{title} ({}):", list.len());
        for item in list {
            let _ = writeln!(out, "  {item}");
        }
    }
    let _ = writeln!(
        out,
        "host functions each host lacks (the guest traps if it calls them):"
    );
    for (profile, missing) in &report.unimplemented {
        let what = if missing.is_empty() {
            "none".to_string()
        } else {
            missing.join(", ")
        };
        let _ = writeln!(out, "  {:<6} {what}", format!("{profile}:"));
    }
    let unknown = if report.unknown_imports.is_empty() {
        "none".to_string()
    } else {
        report.unknown_imports.join(", ")
    };
    let _ = writeln!(out, "imports host-sim does not know (linked as traps): {unknown}");
    out
}
