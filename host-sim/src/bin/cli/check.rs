//! `host-sim check`: does a filter accept a configuration? The VM starts and the root context
//! is configured, as a gateway does when it loads the filter ([`check_configuration`]); no
//! request is sent. Works for any proxy-wasm filter: the verdict is what `proxy_on_vm_start` and
//! `proxy_on_configure` return, and the reasons are the filter's own warn/error log lines.

use super::run::FilterArgs;
use super::{load_module, print_stdout, read_input, Failure};
use anyhow::anyhow;
use clap::Args;
use host_sim::scenario::{check_configuration, ConfigurationCheck, ScenarioOptions};
use host_sim::{Engine, EngineConfig, LogLevel};

/// Flags of `host-sim check`.
#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes: 0 the filter accepted the configuration, 1 it rejected it (or trapped), \
                  2 usage or input error. The filter's warn and error log lines go to stderr."
)]
pub struct CheckArgs {
    #[command(flatten)]
    pub filter: FilterArgs,
}

/// Runs the check: the filter's warn/error lines on stderr, the verdict on stdout when
/// accepted, exit code 1 (with the verdict as the error line) when rejected.
pub fn run(args: CheckArgs) -> Result<(), Failure> {
    let args = args.filter;
    let filter_name = args.filter.display().to_string();
    let filter_bytes = read_input(&args.filter)?;
    let configuration = args.configuration()?;
    let config_name = args
        .config
        .as_ref()
        .map_or_else(|| "the empty configuration".to_string(), |p| p.display().to_string());
    let engine = Engine::new(EngineConfig::default()).map_err(Failure::runtime)?;
    let module = load_module(&engine, &filter_bytes, &filter_name)?;
    let profile = args.profile;
    let mut options = ScenarioOptions::new(profile);
    options.configuration = configuration;
    options.root_id = args.root_id;
    let check = check_configuration(&module, &options).map_err(Failure::runtime)?;
    report_problems(&check);
    match verdict(&check) {
        None => print_stdout(&format!(
            "{config_name}: accepted by {filter_name} ({profile} profile)\n"
        )),
        Some(why) => Err(Failure::runtime(anyhow!(
            "{config_name}: rejected by {filter_name} ({profile} profile): {why}"
        ))),
    }
}

/// Prints the log lines at warn level and above, `[level] message`, on stderr.
pub fn report_problems(check: &ConfigurationCheck) {
    for line in problems(check) {
        eprintln!("{line}");
    }
}

/// The log lines at warn level and above, as `[level] message`.
pub fn problems(check: &ConfigurationCheck) -> Vec<String> {
    check
        .logs
        .iter()
        .filter(|l| l.level >= LogLevel::Warn)
        .map(|l| format!("[{}] {}", l.level, l.message))
        .collect()
}

/// Why the configuration did not take, or `None` when it did.
pub fn verdict(check: &ConfigurationCheck) -> Option<String> {
    if let Some(trap) = &check.trap {
        Some(format!("the filter trapped: {trap}"))
    } else if !check.vm_start_ok {
        Some("proxy_on_vm_start returned false".into())
    } else if !check.configure_ok {
        Some("proxy_on_configure returned false".into())
    } else {
        None
    }
}
