//! Loading modules: one wasmtime engine per host, a precompiled-artifact cache keyed by module
//! hash and engine compatibility, and `InstancePre` so each VM instantiates cheaply.
//!
//! Warm start never recompiles: the first load of a module compiles it and stores the artifact
//! as `<sha256>-<engine hash>.cwasm` in the cache directory; later loads (in this or any other
//! process with the same wasmtime build and settings) deserialize it.

use crate::error::HostError;
use crate::limits::EPOCH_TICK;
use crate::state::HostState;
use sha2::{Digest, Sha256};
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use wasmtime::{ExternType, InstancePre, Linker};

/// How the engine compiles and where it caches.
#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// Where precompiled modules are kept; `None` disables the cache.
    pub cache_dir: Option<PathBuf>,
    /// Meter fuel (needed for [`crate::Limits::fuel_per_callback`]).
    pub fuel: bool,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            cache_dir: Some(default_cache_dir()),
            fuel: false,
        }
    }
}

/// `$HOST_SIM_CACHE_DIR`, else `$XDG_CACHE_HOME/host-sim`, else `~/.cache/host-sim`, else a
/// directory under the system temp dir.
pub fn default_cache_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("HOST_SIM_CACHE_DIR") {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME") {
        return PathBuf::from(dir).join("host-sim");
    }
    if let Some(home) = std::env::var_os("HOME") {
        return PathBuf::from(home).join(".cache").join("host-sim");
    }
    std::env::temp_dir().join("host-sim-cache")
}

/// A wasmtime engine with the proxy-wasm host linked in. Cheap to clone.
#[derive(Clone)]
pub struct Engine {
    pub(crate) engine: wasmtime::Engine,
    linker: Arc<Linker<HostState>>,
    config: EngineConfig,
}

impl Engine {
    /// Builds the engine and starts its epoch ticker (used for callback deadlines).
    pub fn new(config: EngineConfig) -> Result<Engine, HostError> {
        let mut wasm_config = wasmtime::Config::new();
        wasm_config.epoch_interruption(true);
        wasm_config.consume_fuel(config.fuel);
        wasm_config.parallel_compilation(true);
        // `HOST_SIM_PERFMAP=1`: wasmtime writes /tmp/perf-<pid>.map, so `perf record` / `perf
        // report` name the guest's functions instead of showing bare JIT addresses.
        if std::env::var_os("HOST_SIM_PERFMAP").is_some_and(|v| v == "1") {
            wasm_config.profiler(wasmtime::ProfilingStrategy::PerfMap);
        }
        let engine = wasmtime::Engine::new(&wasm_config).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        let mut linker = Linker::new(&engine);
        crate::imports::add_to_linker(&mut linker).map_err(|e| HostError::Engine(format!("{e:#}")))?;
        spawn_epoch_ticker(&engine);
        Ok(Engine {
            engine,
            linker: Arc::new(linker),
            config,
        })
    }

    /// Reads and loads a module file.
    pub fn load_file(&self, path: impl AsRef<Path>) -> Result<Module, HostError> {
        let path = path.as_ref();
        let bytes = std::fs::read(path).map_err(|e| HostError::Read {
            path: path.display().to_string(),
            message: e.to_string(),
        })?;
        self.load_bytes(&bytes)
    }

    /// Loads a module from its bytes (`.wasm` or `.wat`), from the cache when possible.
    pub fn load_bytes(&self, bytes: &[u8]) -> Result<Module, HostError> {
        let sha256 = hex::encode(Sha256::digest(bytes));
        let mut engine_hash = DefaultHasher::new();
        self.engine.precompile_compatibility_hash().hash(&mut engine_hash);
        let cache_path = self
            .config
            .cache_dir
            .as_ref()
            .map(|dir| dir.join(format!("{sha256}-{:016x}.cwasm", engine_hash.finish())));
        let mut from_cache = false;
        let mut module = None;
        if let Some(path) = cache_path.as_ref().filter(|p| p.exists()) {
            // SAFETY: the file is one this engine configuration wrote into host-sim's own cache,
            // named by the source module's hash and the engine's compatibility hash; wasmtime
            // still checks the header and refuses an incompatible artifact.
            if let Ok(m) = unsafe { wasmtime::Module::deserialize_file(&self.engine, path) } {
                module = Some(m);
                from_cache = true;
            }
        }
        let module = match module {
            Some(m) => m,
            None => {
                let m = wasmtime::Module::new(&self.engine, bytes).map_err(|e| HostError::Compile(format!("{e:#}")))?;
                if let Some(path) = cache_path.as_ref() {
                    // The cache is an optimisation: failing to write it is not an error.
                    let _ = write_cache(path, &m);
                }
                m
            }
        };
        Module::new(self, module, sha256, bytes, from_cache)
    }
}

fn write_cache(path: &Path, module: &wasmtime::Module) -> std::io::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let bytes = module.serialize().map_err(std::io::Error::other)?;
    // Write then rename, so a concurrent reader never sees half a file. The temporary name is
    // unique per write, not just per process: two threads of one process loading the same
    // module must not write into one file while the other renames it into place.
    static WRITES: AtomicU64 = AtomicU64::new(0);
    let n = WRITES.fetch_add(1, Ordering::Relaxed);
    let tmp = path.with_extension(format!("tmp{}-{n}", std::process::id()));
    std::fs::write(&tmp, bytes)?;
    std::fs::rename(&tmp, path).inspect_err(|_| {
        let _ = std::fs::remove_file(&tmp);
    })
}

fn spawn_epoch_ticker(engine: &wasmtime::Engine) {
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("host-sim-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match weak.upgrade() {
                Some(engine) => engine.increment_epoch(),
                None => break,
            }
        })
        .ok();
}

/// Facts about a module, for `host-sim info` and the transcript.
#[derive(Debug, Clone, serde::Serialize)]
pub struct ModuleInfo {
    /// Size in bytes.
    pub size: usize,
    /// Hex sha256 of the module bytes.
    pub sha256: String,
    /// The `proxy_abi_version_*` export, if any.
    pub abi_version: Option<String>,
    /// Exported function and memory names.
    pub exports: Vec<String>,
    /// Imports as `module.name`.
    pub imports: Vec<String>,
    /// The module's own version: the text of its `version` custom section (see
    /// [`module_version`]), e.g. `kafka-upstream 0.1.0`.
    pub version: Option<String>,
}

/// Name of the custom section a module may carry its version in (the kafka-upstream filter
/// writes `<crate> <version>` there with a `#[link_section = "version"]` static).
pub const VERSION_SECTION: &str = "version";

/// Longest version text shown; a longer section is not taken for a version.
const VERSION_MAX: usize = 256;

/// The `version` custom section of a binary module, when it is UTF-8 text of at most 256 bytes
/// (trimmed, non-empty, no control characters). The first such section counts.
pub fn module_version(bytes: &[u8]) -> Option<String> {
    let payload = custom_section(bytes, VERSION_SECTION)?;
    if payload.len() > VERSION_MAX {
        return None;
    }
    let text = std::str::from_utf8(payload).ok()?.trim();
    (!text.is_empty() && !text.chars().any(char::is_control)).then(|| text.to_string())
}

/// The payload of the first custom section named `name` of a binary module, walking the
/// section headers only (WebAssembly core spec 5.5.2-5.5.3: magic, version, then sections of
/// an id byte and a LEB128 u32 size; a custom section, id 0, starts with its LEB128-sized
/// name). Every length is checked against what is left; `None` on anything malformed, on text
/// modules, or when there is no such section.
pub fn custom_section<'a>(bytes: &'a [u8], name: &str) -> Option<&'a [u8]> {
    let mut rest = bytes.strip_prefix(b"\0asm")?.get(4..)?;
    while let Some((&id, after_id)) = rest.split_first() {
        let (size, after_size) = read_u32_leb(after_id)?;
        let size = usize::try_from(size).ok()?;
        if after_size.len() < size {
            return None;
        }
        let (section, next) = after_size.split_at(size);
        if id == 0 {
            let (name_len, after_len) = read_u32_leb(section)?;
            let name_len = usize::try_from(name_len).ok()?;
            if after_len.len() < name_len {
                return None;
            }
            let (section_name, payload) = after_len.split_at(name_len);
            if section_name == name.as_bytes() {
                return Some(payload);
            }
        }
        rest = next;
    }
    None
}

/// An unsigned LEB128 u32 (at most 5 bytes) and what follows it.
fn read_u32_leb(bytes: &[u8]) -> Option<(u32, &[u8])> {
    let mut value: u32 = 0;
    for (i, &byte) in bytes.iter().enumerate().take(5) {
        let bits = u32::from(byte & 0x7f);
        if i == 4 && bits > 0x0f {
            return None;
        }
        value |= bits << (7 * i);
        if byte & 0x80 == 0 {
            return Some((value, &bytes[i + 1..]));
        }
    }
    None
}

/// A compiled module ready to start VMs.
#[derive(Clone)]
pub struct Module {
    pub(crate) engine: Engine,
    pub(crate) pre: InstancePre<HostState>,
    info: Arc<ModuleInfo>,
    from_cache: bool,
}

/// ABI versions a module may advertise; 0.2.0 and 0.2.1 share every signature host-sim serves.
const SUPPORTED_ABI: &[&str] = &["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"];

impl Module {
    fn new(
        engine: &Engine,
        module: wasmtime::Module,
        sha256: String,
        bytes: &[u8],
        from_cache: bool,
    ) -> Result<Module, HostError> {
        let exports: Vec<String> = module.exports().map(|e| e.name().to_string()).collect();
        let imports: Vec<String> = module
            .imports()
            .filter(|i| matches!(i.ty(), ExternType::Func(_)))
            .map(|i| format!("{}.{}", i.module(), i.name()))
            .collect();
        let abi_version = exports.iter().find(|e| e.starts_with("proxy_abi_version_")).cloned();
        match abi_version.as_deref() {
            Some(v) if SUPPORTED_ABI.contains(&v) => {}
            Some(v) => return Err(HostError::UnsupportedAbi(v.to_string())),
            None => return Err(HostError::UnsupportedAbi("no proxy_abi_version_* export".into())),
        }
        // Imports host-sim does not provide link as traps, so the module still instantiates and
        // the trap names the missing function if the guest ever calls it.
        let mut linker = (*engine.linker).clone();
        linker
            .define_unknown_imports_as_traps(&module)
            .map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
        let pre = linker
            .instantiate_pre(&module)
            .map_err(|e| HostError::Instantiate(format!("{e:#}")))?;
        Ok(Module {
            engine: engine.clone(),
            pre,
            info: Arc::new(ModuleInfo {
                size: bytes.len(),
                sha256,
                abi_version,
                exports,
                imports,
                version: module_version(bytes),
            }),
            from_cache,
        })
    }

    /// Facts about the module.
    pub fn info(&self) -> &ModuleInfo {
        &self.info
    }

    /// Hex sha256 of the module bytes.
    pub fn sha256(&self) -> &str {
        &self.info.sha256
    }

    /// Whether this load came from the precompiled cache (no compilation happened).
    pub fn loaded_from_cache(&self) -> bool {
        self.from_cache
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn leb(mut n: usize, out: &mut Vec<u8>) {
        loop {
            let byte = (n & 0x7f) as u8;
            n >>= 7;
            if n == 0 {
                out.push(byte);
                return;
            }
            out.push(byte | 0x80);
        }
    }

    /// A module header followed by `sections` (id, payload).
    fn module(sections: &[(u8, Vec<u8>)]) -> Vec<u8> {
        let mut out = b"\0asm\x01\0\0\0".to_vec();
        for (id, payload) in sections {
            out.push(*id);
            leb(payload.len(), &mut out);
            out.extend_from_slice(payload);
        }
        out
    }

    fn custom(name: &str, payload: &[u8]) -> (u8, Vec<u8>) {
        let mut out = Vec::new();
        leb(name.len(), &mut out);
        out.extend_from_slice(name.as_bytes());
        out.extend_from_slice(payload);
        (0, out)
    }

    #[test]
    fn custom_sections_are_found_after_other_sections() {
        let bytes = module(&[
            (1, vec![0]),
            custom("producers", b"x"),
            custom("version", b" filter 1.2.3 "),
            custom("version", b"second"),
        ]);
        assert_eq!(custom_section(&bytes, "producers"), Some(&b"x"[..]));
        assert_eq!(module_version(&bytes).as_deref(), Some("filter 1.2.3"));
        assert_eq!(custom_section(&bytes, "name"), None);
    }

    #[test]
    fn malformed_or_unsuitable_sections_are_no_version() {
        assert_eq!(module_version(b""), None);
        assert_eq!(module_version(b"(module)"), None);
        assert_eq!(module_version(&module(&[])), None);
        assert_eq!(module_version(&module(&[custom("version", b"")])), None);
        assert_eq!(module_version(&module(&[custom("version", b"a\nb")])), None);
        assert_eq!(module_version(&module(&[custom("version", &[0xff])])), None);
        assert_eq!(
            module_version(&module(&[custom("version", &[b'v'; 200])])),
            Some("v".repeat(200))
        );
        assert_eq!(module_version(&module(&[custom("version", &[b'v'; 257])])), None);
        // A section size past the end, a name longer than its section, a truncated LEB128.
        let mut bytes = module(&[custom("version", b"1.0")]);
        bytes.truncate(bytes.len() - 1);
        assert_eq!(module_version(&bytes), None);
        assert_eq!(custom_section(&module(&[(0, vec![9, b'v'])]), "v"), None);
        assert_eq!(custom_section(b"\0asm\x01\0\0\0\0\x80", "v"), None);
        assert_eq!(read_u32_leb(&[0xff, 0xff, 0xff, 0xff, 0x0f]), Some((u32::MAX, &[][..])));
        assert_eq!(read_u32_leb(&[0xff, 0xff, 0xff, 0xff, 0x1f]), None);
        assert_eq!(read_u32_leb(&[0x80, 0x80, 0x80, 0x80, 0x80, 0x00]), None);
    }
}
