//! Runs the REST proxy alone, the way `host-sim rest-proxy` wires it:
//! `cargo run -p host-sim-rest-proxy --example serve -- --listen 127.0.0.1:8082 [--kafka-bootstrap HOST:PORT]`.

use clap::Parser;
use rest_proxy::{RestProxy, RestProxyArgs};

#[derive(Parser)]
#[command(about = "Embedded Confluent-compatible Kafka REST proxy")]
struct Cli {
    #[command(flatten)]
    args: RestProxyArgs,
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let config = Cli::parse().args.into_config()?;
    let listen = config.listen;
    let proxy = RestProxy::new(config)?;
    proxy.check_backend().await?;
    let listener = tokio::net::TcpListener::bind(listen)
        .await
        .map_err(|e| format!("cannot listen on {listen}: {e}"))?;
    proxy
        .serve(listener, async {
            let _ = tokio::signal::ctrl_c().await;
        })
        .await?;
    Ok(())
}
