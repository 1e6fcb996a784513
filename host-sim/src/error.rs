//! The library's error type. The CLI turns these into one clear line and an exit code.

/// What can go wrong driving a filter.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HostError {
    /// The engine could not be built.
    #[error("engine setup failed: {0}")]
    Engine(String),
    /// A file could not be read.
    #[error("cannot read {path}: {message}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        message: String,
    },
    /// The bytes are not a valid module.
    #[error("invalid wasm module: {0}")]
    Compile(String),
    /// The module does not speak a supported proxy-wasm ABI.
    #[error("unsupported proxy-wasm ABI: {0} (host-sim serves 0.2.1 and 0.2.0)")]
    UnsupportedAbi(String),
    /// Instantiation failed.
    #[error("instantiation failed: {0}")]
    Instantiate(String),
    /// The selected host links none of these imports, so it refuses to load the module
    /// ([`crate::profile::HostBehaviour::links`]).
    #[error(
        "the {profile} host cannot link {}: it refuses to load the module (`host-sim info` lists what each host links)",
        imports.join(", ")
    )]
    Unlinkable {
        /// The profile's name.
        profile: &'static str,
        /// The imports, as `module.name`.
        imports: Vec<String>,
    },
    /// A start function trapped.
    #[error("module start trapped: {0}")]
    Start(String),
    /// The VM trapped earlier and cannot run guest code any more.
    #[error("the VM has failed: {0}")]
    VmFailed(String),
    /// A root context re-created on a fresh instance after a trap (Kong profile) refused its
    /// configuration again: the stream that needed it fails, and the root's next use tries
    /// again, as ngx_wasm_module leaves the filter's root unstarted.
    #[error("root context {0} refused its configuration on the fresh instance (the next request tries again)")]
    RootConfigureFailed(u32),
    /// No context with that id.
    #[error("no context {0}")]
    NoSuchContext(u32),
    /// The id names a context of the wrong kind.
    #[error("context {0} is not {1}")]
    WrongContext(u32, &'static str),
    /// No pending HTTP call with that token.
    #[error("no pending http call {0}")]
    UnknownHttpCall(u32),
    /// No open gRPC call with that token.
    #[error("no open grpc call {0}")]
    UnknownGrpcCall(u32),
    /// The operation needs the virtual clock.
    #[error("advancing time needs the virtual clock")]
    RealClock,
    /// The guest export has a signature other than the ABI's.
    #[error("export {0} has a signature other than the ABI's")]
    BadExport(String),
}
