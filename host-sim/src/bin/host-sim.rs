//! `host-sim`: run and inspect proxy-wasm filters without a gateway.
//!
//! A thin binary over the `host_sim` library: `main` → [`cli::run`] → exit code. Flags are
//! parsed by clap into raw structs, validated, then handed to the library, which does the work.
//! Every failure ends as one line on stderr (`host-sim: ...`) and a non-zero exit code: 2 for
//! usage and input errors, 1 for runtime failures; never a panic message or a backtrace.
#![deny(missing_docs)]

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    cli::install_panic_hook();
    match std::panic::catch_unwind(cli::run) {
        Ok(Ok(())) => ExitCode::SUCCESS,
        Ok(Err(failure)) => {
            if let Some(error) = failure.error {
                eprintln!("host-sim: {}", cli::one_line(&format!("{error:#}")));
            }
            ExitCode::from(failure.code)
        }
        // The panic hook already printed the one line.
        Err(_) => ExitCode::from(cli::EXIT_RUNTIME),
    }
}
