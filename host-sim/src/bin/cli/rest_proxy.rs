//! `host-sim rest-proxy`: the embedded Kafka REST proxy on its own.

use super::Failure;
use clap::Args;
use rest_proxy::{RestProxy, RestProxyArgs};

/// Flags of `host-sim rest-proxy`.
#[derive(Debug, Args)]
#[command(
    after_help = "Produce: POST /topics/{topic} (v2 binary/json), POST /v3/clusters/{id}/topics/{topic}/records. \
                        Read back: GET /_sim/topics/{topic}/records. Faults for tests: POST /_sim/faults."
)]
pub struct RestProxyCommand {
    #[command(flatten)]
    args: RestProxyArgs,
}

/// Runs the REST proxy until SIGINT/SIGTERM.
pub fn run(command: RestProxyCommand) -> Result<(), Failure> {
    let config = command.args.into_config().map_err(Failure::usage)?;
    let runtime = super::serve::runtime()?;
    runtime.block_on(async move {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|e| Failure::runtime(anyhow::anyhow!("cannot listen on {}: {e}", config.listen)))?;
        let addr = listener.local_addr().map_err(Failure::runtime)?;
        if let rest_proxy::StorageConfig::Kafka { bootstrap, timeout } = &config.storage {
            // Said once: the bridge's own connection retries are logged only at debug level.
            eprintln!(
                "host-sim rest-proxy: waiting for Kafka at {} (up to {} s)",
                bootstrap.join(","),
                timeout.as_secs_f64()
            );
        }
        let proxy = RestProxy::new(config).map_err(Failure::usage)?;
        proxy.check_backend().await.map_err(Failure::runtime)?;
        eprintln!("host-sim rest-proxy: listening on http://{addr}");
        proxy
            .serve(listener, super::serve::shutdown_signal())
            .await
            .map_err(Failure::runtime)
    })
}
