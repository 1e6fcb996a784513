//! Settings: the raw command-line flags ([`RestProxyArgs`], [`RestProxyOptions`]) and the
//! validated [`RestProxyConfig`] that [`crate::RestProxy::new`] takes, or a [`ConfigError`].
//!
//! Flags are parsed by clap into the raw structs, then [`RestProxyOptions::into_config`] checks
//! them (topic names, partition counts, limits) before anything starts.

use std::net::SocketAddr;
use std::str::FromStr;
use std::time::Duration;

use crate::storage::{StorageConfig, DEFAULT_MESSAGE_MAX_BYTES, DEFAULT_RETENTION_BYTES, DEFAULT_RETENTION_RECORDS};

/// Default listen address: Confluent REST Proxy's usual port, loopback only.
pub const DEFAULT_LISTEN: &str = "127.0.0.1:8082";
/// Default cluster id reported by the v3 API.
pub const DEFAULT_CLUSTER_ID: &str = "host-sim";
/// Default largest request body accepted by the `confluent` flavour, in bytes (larger bodies get
/// 413); each flavour has its own default ([`Flavor::default_max_request_bytes`]).
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 8 * 1024 * 1024;
/// Default time allowed for one Kafka operation (connect, metadata, produce) in bridge mode.
pub const DEFAULT_KAFKA_TIMEOUT_MS: u64 = 10_000;
/// Most partitions a topic may have here (Kafka itself allows more; a simulator does not need them).
pub const MAX_PARTITIONS: u32 = 10_000;

/// Karapace's request limit: aiohttp's `client_max_size` as Karapace sets it by default
/// (`DEFAULT_AIOHTTP_CLIENT_MAX_SIZE`, karapace `src/karapace/core/constants.py`).
pub const KARAPACE_MAX_REQUEST_BYTES: usize = 1_048_576;
/// Karapace's default `producer_max_request_size` (`DEFAULT_PRODUCER_MAX_REQUEST`, karapace
/// `src/karapace/core/constants.py`, the default of `src/karapace/core/config.py`), given to librdkafka as `message.max.bytes`: the largest record
/// its producer sends.
pub const KARAPACE_PRODUCER_MAX_REQUEST_SIZE: usize = 1_048_576;
/// Redpanda's default `kafka_batch_max_bytes` (1 MiB, redpanda
/// `src/v/config/configuration.cc`): the largest batch the broker accepts.
pub const REDPANDA_KAFKA_BATCH_MAX_BYTES: usize = 1_048_576;
/// The memory budget pandaproxy compares a request with, by default here (Redpanda sizes it from
/// the node's memory, see [`crate::flavor::redpanda`]).
pub const REDPANDA_MEMORY_BUDGET: usize = 8 * 1024 * 1024;

/// The REST proxy being modelled: a setting here, its behaviour in [`crate::flavor`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, clap::ValueEnum)]
pub enum Flavor {
    /// Confluent REST Proxy (kafka-rest): v2 and v3.
    #[default]
    Confluent,
    /// Karapace (Aiven-Open/karapace): v2 only.
    Karapace,
    /// Redpanda HTTP Proxy (pandaproxy): v2 only.
    Redpanda,
}

impl Flavor {
    /// The name used on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Flavor::Confluent => "confluent",
            Flavor::Karapace => "karapace",
            Flavor::Redpanda => "redpanda",
        }
    }

    /// Largest request body accepted by default.
    pub fn default_max_request_bytes(self) -> usize {
        match self {
            Flavor::Confluent => DEFAULT_MAX_REQUEST_BYTES,
            Flavor::Karapace => KARAPACE_MAX_REQUEST_BYTES,
            Flavor::Redpanda => REDPANDA_MEMORY_BUDGET,
        }
    }

    /// The record batch limit of the broker behind this proxy by default.
    pub fn default_message_max_bytes(self) -> usize {
        match self {
            Flavor::Confluent => DEFAULT_MESSAGE_MAX_BYTES,
            Flavor::Karapace => KARAPACE_PRODUCER_MAX_REQUEST_SIZE,
            Flavor::Redpanda => REDPANDA_KAFKA_BATCH_MAX_BYTES,
        }
    }
}

impl std::fmt::Display for Flavor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A bad setting or flag.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    /// `--topic` value that is not `NAME` or `NAME:PARTITIONS` with a legal Kafka topic name.
    #[error("bad topic `{0}`: expected NAME or NAME:PARTITIONS, NAME of [a-zA-Z0-9._-] (1 to 249 characters)")]
    BadTopicSpec(String),
    /// A partition count of 0 or over [`MAX_PARTITIONS`].
    #[error("bad partition count {0}: expected 1 to {max}", max = MAX_PARTITIONS)]
    BadPartitions(u32),
    /// A cluster id with characters other than `[a-zA-Z0-9._-]`, or empty.
    #[error("bad cluster id `{0}`: expected 1 or more of [a-zA-Z0-9._-]")]
    BadClusterId(String),
    /// A Kafka bootstrap address that is not `HOST:PORT`.
    #[error("bad Kafka bootstrap address `{0}`: expected HOST:PORT[,HOST:PORT...]")]
    BadBootstrap(String),
    /// A limit set to zero.
    #[error("{0} must be greater than zero")]
    ZeroLimit(&'static str),
}

/// A topic to create at start: `NAME` or `NAME:PARTITIONS` on the command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TopicSpec {
    /// Topic name (Kafka's legal characters `[a-zA-Z0-9._-]`, at most 249 of them).
    pub name: String,
    /// Partition count; `None` means the configured default.
    pub partitions: Option<u32>,
}

impl FromStr for TopicSpec {
    type Err = ConfigError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let (name, partitions) = match s.rsplit_once(':') {
            Some((name, count)) => {
                let n: u32 = count.parse().map_err(|_| ConfigError::BadTopicSpec(s.to_string()))?;
                (name, Some(n))
            }
            None => (s, None),
        };
        validate_topic_name(name).map_err(|_| ConfigError::BadTopicSpec(s.to_string()))?;
        if let Some(n) = partitions {
            validate_partitions(n)?;
        }
        Ok(TopicSpec {
            name: name.to_string(),
            partitions,
        })
    }
}

/// Checks a topic name against Kafka's rules (`Topic.validate` in the Java client): 1 to 249
/// characters from `[a-zA-Z0-9._-]`, and not `.` or `..`.
pub fn validate_topic_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("Topic name is illegal, it can't be empty".to_string());
    }
    if name == "." || name == ".." {
        return Err("Topic name cannot be \".\" or \"..\"".to_string());
    }
    if name.len() > 249 {
        return Err(format!(
            "Topic name is illegal, it can't be longer than 249 characters, topic name: {name}"
        ));
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'.' || b == b'_' || b == b'-')
    {
        return Err(format!(
            "Topic name \"{name}\" is illegal, it contains a character other than ASCII \
             alphanumerics, '.', '_' and '-'"
        ));
    }
    Ok(())
}

fn validate_partitions(n: u32) -> Result<(), ConfigError> {
    if n == 0 || n > MAX_PARTITIONS {
        return Err(ConfigError::BadPartitions(n));
    }
    Ok(())
}

/// Validated settings of one REST proxy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestProxyConfig {
    /// Address [`crate::RestProxy::serve`] callers are expected to bind (informational for
    /// embedders; the CLI binds it).
    pub listen: SocketAddr,
    /// Cluster id of the v3 API; v3 requests naming another cluster get 404.
    pub cluster_id: String,
    /// Create unknown topics on first produce (Kafka's `auto.create.topics.enable`).
    pub auto_create_topics: bool,
    /// Partition count of auto-created topics and of `--topic NAME` without a count.
    pub default_partitions: u32,
    /// Topics that exist from the start.
    pub topics: Vec<TopicSpec>,
    /// Largest request body accepted; larger ones get 413.
    pub max_request_bytes: usize,
    /// The broker's `message.max.bytes`: the largest record batch stored; a larger one fails
    /// with MESSAGE_TOO_LARGE.
    pub message_max_bytes: usize,
    /// Which REST proxy is modelled.
    pub flavor: Flavor,
    /// Storage backend.
    pub storage: StorageConfig,
}

impl Default for RestProxyConfig {
    fn default() -> Self {
        RestProxyConfig {
            listen: SocketAddr::from(([127, 0, 0, 1], 8082)),
            cluster_id: DEFAULT_CLUSTER_ID.to_string(),
            auto_create_topics: true,
            default_partitions: 1,
            topics: Vec::new(),
            max_request_bytes: DEFAULT_MAX_REQUEST_BYTES,
            message_max_bytes: DEFAULT_MESSAGE_MAX_BYTES,
            flavor: Flavor::Confluent,
            storage: StorageConfig::default(),
        }
    }
}

impl RestProxyConfig {
    /// Checks the settings; [`crate::RestProxy::new`] calls this.
    pub fn validate(&self) -> Result<(), ConfigError> {
        if self.cluster_id.is_empty()
            || !self
                .cluster_id
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
        {
            return Err(ConfigError::BadClusterId(self.cluster_id.clone()));
        }
        validate_partitions(self.default_partitions)?;
        for t in &self.topics {
            validate_topic_name(&t.name).map_err(|_| ConfigError::BadTopicSpec(t.name.clone()))?;
            if let Some(n) = t.partitions {
                validate_partitions(n)?;
            }
        }
        if self.max_request_bytes == 0 {
            return Err(ConfigError::ZeroLimit("max request bytes"));
        }
        if self.message_max_bytes == 0 {
            return Err(ConfigError::ZeroLimit("message max bytes"));
        }
        match &self.storage {
            StorageConfig::Memory {
                retention_records,
                retention_bytes,
            } => {
                if *retention_records == 0 {
                    return Err(ConfigError::ZeroLimit("retention records"));
                }
                if *retention_bytes == 0 {
                    return Err(ConfigError::ZeroLimit("retention bytes"));
                }
            }
            StorageConfig::Kafka { bootstrap, timeout } => {
                if bootstrap.is_empty() {
                    return Err(ConfigError::BadBootstrap(String::new()));
                }
                for b in bootstrap {
                    validate_host_port(b)?;
                }
                if timeout.is_zero() {
                    return Err(ConfigError::ZeroLimit("kafka timeout"));
                }
            }
        }
        Ok(())
    }
}

fn validate_host_port(s: &str) -> Result<(), ConfigError> {
    let bad = || ConfigError::BadBootstrap(s.to_string());
    let (host, port) = s.rsplit_once(':').ok_or_else(bad)?;
    if host.is_empty() || port.parse::<u16>().map_or(true, |p| p == 0) {
        return Err(bad());
    }
    Ok(())
}

/// Flags of the REST proxy other than its listen address, for flattening into any command
/// (`host-sim rest-proxy`, or `host-sim serve --embedded-rest-proxy`).
#[derive(Debug, Clone, clap::Args)]
pub struct RestProxyOptions {
    /// Cluster id reported by the v3 API (`/v3/clusters/{id}`).
    #[arg(long = "cluster-id", value_name = "ID", default_value = DEFAULT_CLUSTER_ID)]
    pub cluster_id: String,

    /// Partition count of auto-created topics and of `--topic NAME` without a count.
    #[arg(long = "partitions", value_name = "N", default_value_t = 1)]
    pub partitions: u32,

    /// Create unknown topics on first produce (`false`: unknown topics get 404 / 40401).
    #[arg(long = "auto-create-topics", value_name = "BOOL", default_value_t = true, action = clap::ArgAction::Set)]
    pub auto_create_topics: bool,

    /// A topic to create at start, `NAME` or `NAME:PARTITIONS`; repeatable.
    #[arg(long = "topic", value_name = "NAME[:PARTITIONS]")]
    pub topics: Vec<TopicSpec>,

    /// Produce to a real Kafka broker instead of in-memory topics (comma-separated `HOST:PORT`s).
    #[arg(long = "kafka-bootstrap", value_name = "HOST:PORT")]
    pub kafka_bootstrap: Option<String>,

    /// Time allowed for one Kafka operation in bridge mode, in milliseconds.
    #[arg(long = "kafka-timeout-ms", value_name = "MS", default_value_t = DEFAULT_KAFKA_TIMEOUT_MS)]
    pub kafka_timeout_ms: u64,

    /// Largest request body accepted, in bytes; larger bodies get 413 (default: the flavour's,
    /// 8 MiB for confluent and redpanda, 1 MiB for karapace).
    #[arg(long = "max-request-bytes", value_name = "BYTES")]
    pub max_request_bytes: Option<usize>,

    /// The broker's `message.max.bytes`: largest record batch stored; larger ones fail with
    /// Kafka's MESSAGE_TOO_LARGE (default: the flavour's, 1048588 for confluent, 1048576 for
    /// karapace and redpanda).
    #[arg(long = "message-max-bytes", value_name = "BYTES")]
    pub message_max_bytes: Option<usize>,

    /// Most records kept per in-memory partition; the oldest are evicted (and counted) beyond it.
    #[arg(long = "retention-records", value_name = "N", default_value_t = DEFAULT_RETENTION_RECORDS)]
    pub retention_records: usize,

    /// Most bytes kept per in-memory partition; the oldest records are evicted beyond it.
    #[arg(long = "retention-bytes", value_name = "BYTES", default_value_t = DEFAULT_RETENTION_BYTES)]
    pub retention_bytes: usize,
}

impl RestProxyOptions {
    /// Validates the flags into a [`RestProxyConfig`] of `flavor` listening on `listen`.
    pub fn into_config(self, listen: SocketAddr, flavor: Flavor) -> Result<RestProxyConfig, ConfigError> {
        let storage = match self.kafka_bootstrap {
            Some(list) => StorageConfig::Kafka {
                bootstrap: list
                    .split(',')
                    .map(|s| s.trim().to_string())
                    .filter(|s| !s.is_empty())
                    .collect(),
                timeout: Duration::from_millis(self.kafka_timeout_ms),
            },
            None => StorageConfig::Memory {
                retention_records: self.retention_records,
                retention_bytes: self.retention_bytes,
            },
        };
        let config = RestProxyConfig {
            listen,
            cluster_id: self.cluster_id,
            auto_create_topics: self.auto_create_topics,
            default_partitions: self.partitions,
            topics: self.topics,
            max_request_bytes: self.max_request_bytes.unwrap_or(flavor.default_max_request_bytes()),
            message_max_bytes: self.message_max_bytes.unwrap_or(flavor.default_message_max_bytes()),
            flavor,
            storage,
        };
        config.validate()?;
        Ok(config)
    }
}

/// Flags of `host-sim rest-proxy`: the listen address plus [`RestProxyOptions`].
#[derive(Debug, Clone, clap::Args)]
pub struct RestProxyArgs {
    /// Address to listen on (loopback by default).
    #[arg(long = "listen", value_name = "HOST:PORT", default_value = DEFAULT_LISTEN)]
    pub listen: SocketAddr,

    /// Which REST proxy to behave like: its API versions, answers, limits and JSON handling.
    #[arg(long = "flavor", value_name = "FLAVOR", value_enum, default_value_t = Flavor::Confluent)]
    pub flavor: Flavor,

    /// Everything else.
    #[command(flatten)]
    pub options: RestProxyOptions,
}

impl RestProxyArgs {
    /// Validates the flags into a [`RestProxyConfig`].
    pub fn into_config(self) -> Result<RestProxyConfig, ConfigError> {
        self.options.into_config(self.listen, self.flavor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        args: RestProxyArgs,
    }

    #[test]
    fn topic_spec_parses_name_and_count() {
        assert_eq!(
            "orders:3".parse::<TopicSpec>().ok(),
            Some(TopicSpec {
                name: "orders".into(),
                partitions: Some(3)
            })
        );
        assert_eq!(
            "a.b_c-d".parse::<TopicSpec>().ok(),
            Some(TopicSpec {
                name: "a.b_c-d".into(),
                partitions: None
            })
        );
        assert!("bad name".parse::<TopicSpec>().is_err());
        assert!("t:0".parse::<TopicSpec>().is_err());
        assert!("t:x".parse::<TopicSpec>().is_err());
        assert!(":3".parse::<TopicSpec>().is_err());
        assert!("..".parse::<TopicSpec>().is_err());
    }

    #[test]
    fn topic_names_follow_kafka_rules() {
        assert!(validate_topic_name("ok-topic_1.x").is_ok());
        assert!(validate_topic_name("").is_err());
        assert!(validate_topic_name(&"a".repeat(250)).is_err());
        assert!(validate_topic_name(&"a".repeat(249)).is_ok());
        assert!(validate_topic_name("a/b").is_err());
        assert!(validate_topic_name("é").is_err());
    }

    #[test]
    fn flags_become_a_config() {
        let cli = Cli::try_parse_from([
            "x",
            "--listen",
            "127.0.0.1:9999",
            "--topic",
            "a:2",
            "--topic",
            "b",
            "--auto-create-topics",
            "false",
            "--partitions",
            "4",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let config = cli.args.into_config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(config.listen.port(), 9999);
        assert!(!config.auto_create_topics);
        assert_eq!(config.default_partitions, 4);
        assert_eq!(config.topics.len(), 2);
        assert!(matches!(config.storage, StorageConfig::Memory { .. }));
        assert_eq!(config.flavor, Flavor::Confluent);
        assert_eq!(config.max_request_bytes, DEFAULT_MAX_REQUEST_BYTES);
        assert_eq!(config.message_max_bytes, 1_048_588);
    }

    #[test]
    fn flavor_picks_its_limits_unless_given() {
        let cli = Cli::try_parse_from(["x", "--flavor", "karapace"]).unwrap_or_else(|e| panic!("{e}"));
        let config = cli.args.into_config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (config.flavor, config.max_request_bytes, config.message_max_bytes),
            (Flavor::Karapace, 1_048_576, 1_048_576)
        );
        let cli = Cli::try_parse_from([
            "x",
            "--flavor",
            "redpanda",
            "--max-request-bytes",
            "5000",
            "--message-max-bytes",
            "300",
        ])
        .unwrap_or_else(|e| panic!("{e}"));
        let config = cli.args.into_config().unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (config.flavor, config.max_request_bytes, config.message_max_bytes),
            (Flavor::Redpanda, 5000, 300)
        );
        assert!(Cli::try_parse_from(["x", "--flavor", "kafka-rest"]).is_err());
        let cli = Cli::try_parse_from(["x", "--message-max-bytes", "0"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.args.into_config(), Err(ConfigError::ZeroLimit(_))));
    }

    #[test]
    fn kafka_bootstrap_is_checked() {
        let cli = Cli::try_parse_from(["x", "--kafka-bootstrap", "127.0.0.1:9092,localhost:9093"])
            .unwrap_or_else(|e| panic!("{e}"));
        let config = cli.args.into_config().unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(&config.storage, StorageConfig::Kafka { bootstrap, .. } if bootstrap.len() == 2));
        let cli = Cli::try_parse_from(["x", "--kafka-bootstrap", "nohost"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.args.into_config(), Err(ConfigError::BadBootstrap(_))));
    }

    #[test]
    fn bad_values_are_rejected() {
        let cli = Cli::try_parse_from(["x", "--partitions", "0"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.args.into_config(), Err(ConfigError::BadPartitions(0))));
        let cli = Cli::try_parse_from(["x", "--cluster-id", "a b"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.args.into_config(), Err(ConfigError::BadClusterId(_))));
        let cli = Cli::try_parse_from(["x", "--max-request-bytes", "0"]).unwrap_or_else(|e| panic!("{e}"));
        assert!(matches!(cli.args.into_config(), Err(ConfigError::ZeroLimit(_))));
    }
}
