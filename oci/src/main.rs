//! `wasm-oci`: packs a proxy-wasm filter as an OCI image (see the library's docs for the
//! layout), pushes that image to a registry and pulls a module back out of one.
//!
//! Exit codes: 0 done, 1 a runtime failure (bad file, registry error), 2 a usage error (clap).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use oci_client::client::{ClientConfig, ClientProtocol};
use oci_client::manifest::OciImageManifest;
use oci_client::secrets::RegistryAuth;
use oci_client::{Client, Reference};
use wasm_oci::{read_layout, write_layout, ImageInfo, WasmImage, MANIFEST_MEDIA_TYPE};

#[derive(Parser)]
#[command(
    version,
    about = "Package a proxy-wasm filter as an OCI image for Istio and Envoy Gateway"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Build the image as an OCI image layout directory; prints the image digest.
    Build {
        /// The filter's .wasm file.
        #[arg(long)]
        wasm: PathBuf,
        /// The layout directory to write.
        #[arg(long)]
        out: PathBuf,
        /// The tag recorded in the layout's index.json.
        #[arg(long, default_value = "latest")]
        tag: String,
        /// org.opencontainers.image.title
        #[arg(long)]
        title: Option<String>,
        /// org.opencontainers.image.version
        #[arg(long)]
        image_version: Option<String>,
        /// org.opencontainers.image.source
        #[arg(long)]
        source: Option<String>,
        /// org.opencontainers.image.licenses
        #[arg(long)]
        licenses: Option<String>,
    },
    /// Push the image in a layout directory to REFERENCE (registry/repository:tag).
    Push {
        /// The layout directory `build` wrote.
        #[arg(long)]
        layout: PathBuf,
        /// Where to push, e.g. ghcr.io/acme/kafka-upstream:0.1.0.
        reference: String,
        /// Talk plain HTTP to the registry (a local registry without TLS).
        #[arg(long)]
        plain_http: bool,
        #[command(flatten)]
        credentials: Credentials,
    },
    /// Pull REFERENCE and write the module inside it to --out; prints the image digest.
    Pull {
        /// What to pull, e.g. ghcr.io/acme/kafka-upstream:0.1.0.
        reference: String,
        /// Where to write the module.
        #[arg(long)]
        out: PathBuf,
        /// Talk plain HTTP to the registry (a local registry without TLS).
        #[arg(long)]
        plain_http: bool,
        #[command(flatten)]
        credentials: Credentials,
    },
}

/// Registry credentials: a user name on the command line, its password (or token) from the
/// environment, never from argv where other users of the machine could read it.
#[derive(clap::Args)]
struct Credentials {
    /// User name for the registry's basic or token authentication; the password is read from
    /// the environment variable WASM_OCI_PASSWORD. Without it: anonymous.
    #[arg(long)]
    username: Option<String>,
}

/// The environment variable holding the registry password or token.
const PASSWORD_VAR: &str = "WASM_OCI_PASSWORD";

impl Credentials {
    fn auth(&self) -> Result<RegistryAuth> {
        match &self.username {
            None => Ok(RegistryAuth::Anonymous),
            Some(user) => match std::env::var(PASSWORD_VAR) {
                Ok(password) => Ok(RegistryAuth::Basic(user.clone(), password)),
                Err(_) => bail!("--username {user} needs the password in the environment variable {PASSWORD_VAR}"),
            },
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("wasm-oci: {err:#}");
            ExitCode::from(1)
        }
    }
}

fn run(command: Command) -> Result<()> {
    match command {
        Command::Build {
            wasm,
            out,
            tag,
            title,
            image_version,
            source,
            licenses,
        } => {
            let module = std::fs::read(&wasm).with_context(|| format!("reading {}", wasm.display()))?;
            let info = ImageInfo {
                title,
                version: image_version,
                source,
                licenses,
            };
            let image = WasmImage::build(&module, &info).with_context(|| wasm.display().to_string())?;
            write_layout(&out, &image, &tag)?;
            println!("{}", image.digest());
            Ok(())
        }
        Command::Push {
            layout,
            reference,
            plain_http,
            credentials,
        } => {
            let image = read_layout(&layout)?;
            let reference = parse_reference(&reference)?;
            let auth = credentials.auth()?;
            let digest = runtime()?.block_on(push(&client(plain_http), &reference, &image, &auth))?;
            println!("{digest}");
            Ok(())
        }
        Command::Pull {
            reference,
            out,
            plain_http,
            credentials,
        } => {
            let reference = parse_reference(&reference)?;
            let auth = credentials.auth()?;
            let image = runtime()?.block_on(pull(&client(plain_http), &reference, &auth))?;
            let module = image.module()?;
            std::fs::write(&out, module).with_context(|| format!("writing {}", out.display()))?;
            println!("{}", image.digest());
            Ok(())
        }
    }
}

fn parse_reference(reference: &str) -> Result<Reference> {
    reference
        .parse()
        .with_context(|| format!("{reference:?} is not an image reference (registry/repository:tag)"))
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")
}

fn client(plain_http: bool) -> Client {
    // oci-client is built without a TLS crypto provider of its own (no aws-lc C build): ring's
    // is installed once here. An error means one is installed already, which is as good.
    // rustls 0.23.48 deprecates ring's provider for lacking post-quantum key exchange; classical
    // TLS is what registries require, and it keeps the build free of aws-lc's C toolchain.
    #[allow(deprecated)]
    let _ = rustls::crypto::ring::default_provider().install_default();
    Client::new(ClientConfig {
        protocol: if plain_http {
            ClientProtocol::Http
        } else {
            ClientProtocol::Https
        },
        ..ClientConfig::default()
    })
}

/// Pushes the blobs, then the manifest's exact bytes, so the registry's digest is the one
/// `build` printed.
async fn push(client: &Client, reference: &Reference, image: &WasmImage, auth: &RegistryAuth) -> Result<String> {
    client.store_auth_if_needed(reference.resolve_registry(), auth).await;
    for blob in [&image.layer, &image.config] {
        let digest = wasm_oci::digest_of(blob);
        client
            .push_blob(reference, blob.clone(), &digest)
            .await
            .with_context(|| format!("pushing blob {digest}"))?;
    }
    let content_type = MANIFEST_MEDIA_TYPE.parse().expect("a valid header value");
    client
        .push_manifest_raw(reference, image.manifest.clone(), content_type)
        .await
        .context("pushing the manifest")?;
    Ok(image.digest())
}

/// Pulls the manifest and both blobs and checks them as the fetchers would.
async fn pull(client: &Client, reference: &Reference, auth: &RegistryAuth) -> Result<WasmImage> {
    let (manifest, digest) = client
        .pull_manifest_raw(reference, auth, &[MANIFEST_MEDIA_TYPE])
        .await
        .context("pulling the manifest")?;
    if wasm_oci::digest_of(&manifest) != digest {
        bail!("the registry's manifest digest {digest} does not match its content");
    }
    let parsed: OciImageManifest =
        serde_json::from_slice(&manifest).context("the manifest is not an OCI image manifest")?;
    let [layer] = parsed.layers.as_slice() else {
        bail!(
            "the image has {} layers; a wasm image of this kind has one",
            parsed.layers.len()
        );
    };
    let mut config = Vec::new();
    client
        .pull_blob(reference, &parsed.config, &mut config)
        .await
        .context("pulling the config blob")?;
    let mut layer_bytes = Vec::new();
    client
        .pull_blob(reference, layer, &mut layer_bytes)
        .await
        .context("pulling the layer blob")?;
    let image = WasmImage {
        manifest: manifest.to_vec(),
        config,
        layer: layer_bytes,
    };
    image.verify()?;
    Ok(image)
}
