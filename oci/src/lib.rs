//! A proxy-wasm filter as an OCI image, in the layout Istio's `WasmPlugin` and Envoy Gateway's
//! `EnvoyExtensionPolicy` (code type `Image`) pull.
//!
//! Istio's image fetcher (istio/istio `pkg/wasm/imagefetcher.go`, which Envoy Gateway's
//! `internal/wasm` reuses) accepts three shapes of image, tried in this order: a Docker
//! manifest whose last layer is a gzipped tar holding `plugin.wasm`; an OCI manifest whose last
//! layer is `application/vnd.oci.image.layer.v1.tar+gzip` holding `plugin.wasm` (the "compat"
//! variant of solo-io's Wasm image specification, `spec-compat.md`); and a two-layer OCI
//! artifact with an `application/vnd.module.wasm.content.layer.v1+wasm` layer. This module
//! builds the second: an ordinary single-layer OCI image, so every OCI registry stores it and
//! every tool that copies images (crane, skopeo, `docker pull`) handles it, while both control
//! planes read the module from it.
//!
//! The image is reproducible: the tar entry has a fixed owner, mode and time, and the gzip
//! header no time or name, so the same `.wasm` always gives the same manifest digest (the value
//! for `WasmPlugin.spec.sha256` / `image.sha256`). Nothing here does I/O beyond
//! [`write_layout`] and [`read_layout`]; the registry client lives in the binary.

#![deny(missing_docs)]

use std::fmt;
use std::io::{Read, Write};
use std::path::Path;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

/// Media type of an OCI image manifest.
pub const MANIFEST_MEDIA_TYPE: &str = "application/vnd.oci.image.manifest.v1+json";
/// Media type of an OCI image configuration.
pub const CONFIG_MEDIA_TYPE: &str = "application/vnd.oci.image.config.v1+json";
/// Media type of the layer: a gzipped tar, the "compat" variant's layer (Istio checks for
/// exactly this type, `types.OCILayer`, in `extractOCIStandardImage`).
pub const LAYER_MEDIA_TYPE: &str = "application/vnd.oci.image.layer.v1.tar+gzip";
/// Media type of an OCI image index (`index.json` of an image layout).
pub const INDEX_MEDIA_TYPE: &str = "application/vnd.oci.image.index.v1+json";
/// The file the fetchers look for in the layer (solo-io `spec-compat.md`; Istio's
/// `extractWasmPluginBinary` compares the base name of each tar entry with it).
pub const PLUGIN_FILE: &str = "plugin.wasm";
/// The largest module this tool packs or extracts; far above any real filter, it keeps a
/// hostile layer from making the tool allocate without bound.
pub const MAX_MODULE_BYTES: u64 = 256 << 20;

/// What the image says about the module, as OCI annotations on the manifest
/// (opencontainers image-spec `annotations.md`).
#[derive(Debug, Clone, Default)]
pub struct ImageInfo {
    /// `org.opencontainers.image.title`.
    pub title: Option<String>,
    /// `org.opencontainers.image.version`.
    pub version: Option<String>,
    /// `org.opencontainers.image.source`.
    pub source: Option<String>,
    /// `org.opencontainers.image.licenses` (an SPDX expression).
    pub licenses: Option<String>,
}

/// The three blobs of the image, each exactly as stored and pushed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WasmImage {
    /// The manifest JSON; its sha256 is the image digest.
    pub manifest: Vec<u8>,
    /// The image configuration JSON.
    pub config: Vec<u8>,
    /// The layer: a gzipped tar holding [`PLUGIN_FILE`].
    pub layer: Vec<u8>,
}

/// Why an image could not be built, read or unpacked.
#[derive(Debug)]
pub enum ImageError {
    /// Reading or writing a file failed.
    Io(String, std::io::Error),
    /// A blob or document is not what the image layout or manifest says.
    Invalid(String),
}

impl fmt::Display for ImageError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageError::Io(what, err) => write!(f, "{what}: {err}"),
            ImageError::Invalid(why) => f.write_str(why),
        }
    }
}

impl std::error::Error for ImageError {}

fn invalid(why: impl Into<String>) -> ImageError {
    ImageError::Invalid(why.into())
}

/// `sha256:<hex>` of `bytes`, the form OCI descriptors use.
pub fn digest_of(bytes: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(bytes)))
}

fn descriptor(media_type: &str, blob: &[u8]) -> Value {
    json!({ "mediaType": media_type, "digest": digest_of(blob), "size": blob.len() })
}

impl WasmImage {
    /// Packs `module` (a WebAssembly binary) as the image.
    pub fn build(module: &[u8], info: &ImageInfo) -> Result<WasmImage, ImageError> {
        if !module.starts_with(b"\0asm") {
            return Err(invalid("the module is not a WebAssembly binary (no \\0asm magic)"));
        }
        if module.len() as u64 > MAX_MODULE_BYTES {
            return Err(invalid(format!("the module is larger than {MAX_MODULE_BYTES} bytes")));
        }
        let tar = plugin_tar(module).map_err(|e| ImageError::Io("building the layer's tar".into(), e))?;
        let layer = gzip(&tar).map_err(|e| ImageError::Io("compressing the layer".into(), e))?;
        // The image configuration's required members (image-spec `config.md`): architecture,
        // os and rootfs, whose diff_ids name the *uncompressed* layer. `wasm`/`wasip1` is the
        // platform Docker and containerd use for WebAssembly images.
        let config = serde_json::to_vec(&json!({
            "architecture": "wasm",
            "os": "wasip1",
            "rootfs": { "type": "layers", "diff_ids": [digest_of(&tar)] },
            "config": {},
        }))
        .expect("a JSON value always serializes");
        let mut annotations = serde_json::Map::new();
        for (key, value) in [
            ("org.opencontainers.image.title", &info.title),
            ("org.opencontainers.image.version", &info.version),
            ("org.opencontainers.image.source", &info.source),
            ("org.opencontainers.image.licenses", &info.licenses),
        ] {
            if let Some(value) = value {
                annotations.insert(key.to_owned(), Value::String(value.clone()));
            }
        }
        let mut layer_descriptor = descriptor(LAYER_MEDIA_TYPE, &layer);
        layer_descriptor["annotations"] = json!({ "org.opencontainers.image.title": PLUGIN_FILE });
        let mut manifest = json!({
            "schemaVersion": 2,
            "mediaType": MANIFEST_MEDIA_TYPE,
            "config": descriptor(CONFIG_MEDIA_TYPE, &config),
            "layers": [layer_descriptor],
        });
        if !annotations.is_empty() {
            manifest["annotations"] = Value::Object(annotations);
        }
        let manifest = serde_json::to_vec(&manifest).expect("a JSON value always serializes");
        Ok(WasmImage {
            manifest,
            config,
            layer,
        })
    }

    /// The image digest: the manifest's sha256.
    pub fn digest(&self) -> String {
        digest_of(&self.manifest)
    }

    /// Checks that the manifest describes this config and layer (digests, sizes, media types)
    /// the way the fetchers need: one layer of [`LAYER_MEDIA_TYPE`].
    pub fn verify(&self) -> Result<(), ImageError> {
        let manifest: Value =
            serde_json::from_slice(&self.manifest).map_err(|e| invalid(format!("the manifest is not JSON: {e}")))?;
        if manifest["schemaVersion"] != 2 {
            return Err(invalid("the manifest's schemaVersion is not 2"));
        }
        check_descriptor(&manifest["config"], CONFIG_MEDIA_TYPE, &self.config, "config")?;
        let layers = manifest["layers"]
            .as_array()
            .ok_or_else(|| invalid("the manifest has no layers array"))?;
        match layers.as_slice() {
            [layer] => check_descriptor(layer, LAYER_MEDIA_TYPE, &self.layer, "layer"),
            other => Err(invalid(format!(
                "the manifest has {} layers; this image has one",
                other.len()
            ))),
        }
    }

    /// The module inside the layer, found as Istio's fetcher finds it.
    pub fn module(&self) -> Result<Vec<u8>, ImageError> {
        extract_plugin(&self.layer)
    }
}

fn check_descriptor(descriptor: &Value, media_type: &str, blob: &[u8], what: &str) -> Result<(), ImageError> {
    if descriptor["mediaType"] != media_type {
        return Err(invalid(format!(
            "the manifest's {what} has media type {}, expected {media_type}",
            descriptor["mediaType"]
        )));
    }
    if descriptor["digest"] != digest_of(blob).as_str() {
        return Err(invalid(format!(
            "the {what} blob does not match the digest in the manifest"
        )));
    }
    if descriptor["size"] != blob.len() {
        return Err(invalid(format!(
            "the {what} blob does not match the size in the manifest"
        )));
    }
    Ok(())
}

/// A tar archive with the single regular file [`PLUGIN_FILE`]: root-owned, mode 0644, time 0,
/// so its bytes depend on the module alone.
fn plugin_tar(module: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut header = tar::Header::new_ustar();
    header.set_path(PLUGIN_FILE)?;
    header.set_size(module.len() as u64);
    header.set_mode(0o644);
    header.set_uid(0);
    header.set_gid(0);
    header.set_mtime(0);
    header.set_entry_type(tar::EntryType::Regular);
    header.set_cksum();
    let mut builder = tar::Builder::new(Vec::new());
    builder.append(&header, module)?;
    builder.into_inner()
}

/// gzip with no file name and time 0 in the header (RFC 1952 MTIME 0: "no time stamp").
fn gzip(data: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut encoder = flate2::GzBuilder::new()
        .mtime(0)
        .write(Vec::new(), flate2::Compression::best());
    encoder.write_all(data)?;
    encoder.finish()
}

/// The bytes of [`PLUGIN_FILE`] in a gzipped tar layer: the first entry whose base name is
/// `plugin.wasm`, as Istio's `extractWasmPluginBinary` takes it.
pub fn extract_plugin(layer: &[u8]) -> Result<Vec<u8>, ImageError> {
    let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(layer));
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("the layer is not a gzipped tar: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("the layer is not a gzipped tar: {e}")))?;
        let path = entry
            .path()
            .map_err(|e| invalid(format!("a tar entry has an unreadable path: {e}")))?;
        if path.file_name().and_then(|n| n.to_str()) != Some(PLUGIN_FILE) {
            continue;
        }
        let size = entry.header().size().unwrap_or(u64::MAX);
        if size > MAX_MODULE_BYTES {
            return Err(invalid(format!(
                "{PLUGIN_FILE} is larger than {MAX_MODULE_BYTES} bytes"
            )));
        }
        let mut module = Vec::with_capacity(size as usize);
        entry
            .read_to_end(&mut module)
            .map_err(|e| invalid(format!("reading {PLUGIN_FILE} from the layer: {e}")))?;
        return Ok(module);
    }
    Err(invalid(format!("the layer holds no {PLUGIN_FILE}")))
}

fn blob_path(dir: &Path, digest: &str) -> Result<std::path::PathBuf, ImageError> {
    let hex = digest
        .strip_prefix("sha256:")
        .filter(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
        .ok_or_else(|| invalid(format!("unsupported digest {digest:?} (sha256 expected)")))?;
    Ok(dir.join("blobs").join("sha256").join(hex))
}

fn write_file(path: &Path, bytes: &[u8]) -> Result<(), ImageError> {
    std::fs::write(path, bytes).map_err(|e| ImageError::Io(format!("writing {}", path.display()), e))
}

fn read_file(path: &Path) -> Result<Vec<u8>, ImageError> {
    std::fs::read(path).map_err(|e| ImageError::Io(format!("reading {}", path.display()), e))
}

/// Writes `image` as an OCI image layout (image-spec `image-layout.md`) in `dir`, its index
/// naming it `tag` (`org.opencontainers.image.ref.name`). Any earlier layout there is replaced.
pub fn write_layout(dir: &Path, image: &WasmImage, tag: &str) -> Result<(), ImageError> {
    let blobs = dir.join("blobs").join("sha256");
    std::fs::create_dir_all(&blobs).map_err(|e| ImageError::Io(format!("creating {}", blobs.display()), e))?;
    for blob in [&image.manifest, &image.config, &image.layer] {
        write_file(&blob_path(dir, &digest_of(blob))?, blob)?;
    }
    write_file(&dir.join("oci-layout"), br#"{"imageLayoutVersion":"1.0.0"}"#)?;
    let mut manifest = descriptor(MANIFEST_MEDIA_TYPE, &image.manifest);
    manifest["annotations"] = json!({ "org.opencontainers.image.ref.name": tag });
    let index = json!({ "schemaVersion": 2, "mediaType": INDEX_MEDIA_TYPE, "manifests": [manifest] });
    write_file(
        &dir.join("index.json"),
        &serde_json::to_vec_pretty(&index).expect("a JSON value always serializes"),
    )
}

/// Reads the image an OCI image layout in `dir` holds (its index must name exactly one
/// manifest) and checks every blob against its digest.
pub fn read_layout(dir: &Path) -> Result<WasmImage, ImageError> {
    let index: Value = serde_json::from_slice(&read_file(&dir.join("index.json"))?)
        .map_err(|e| invalid(format!("{}: not JSON: {e}", dir.join("index.json").display())))?;
    let manifests = index["manifests"]
        .as_array()
        .ok_or_else(|| invalid("index.json has no manifests array"))?;
    let [entry] = manifests.as_slice() else {
        return Err(invalid(format!(
            "index.json names {} manifests; one expected",
            manifests.len()
        )));
    };
    let manifest_digest = entry["digest"]
        .as_str()
        .ok_or_else(|| invalid("index.json's manifest has no digest"))?;
    let manifest = read_file(&blob_path(dir, manifest_digest)?)?;
    if digest_of(&manifest) != manifest_digest {
        return Err(invalid("the manifest blob does not match its digest in index.json"));
    }
    let parsed: Value =
        serde_json::from_slice(&manifest).map_err(|e| invalid(format!("the manifest is not JSON: {e}")))?;
    let blob_of = |descriptor: &Value, what: &str| -> Result<Vec<u8>, ImageError> {
        let digest = descriptor["digest"]
            .as_str()
            .ok_or_else(|| invalid(format!("the manifest's {what} has no digest")))?;
        read_file(&blob_path(dir, digest)?)
    };
    let config = blob_of(&parsed["config"], "config")?;
    let layer = blob_of(&parsed["layers"][0], "layer")?;
    let image = WasmImage {
        manifest,
        config,
        layer,
    };
    image.verify()?;
    Ok(image)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The smallest valid module: magic and version.
    const MODULE: &[u8] = b"\0asm\x01\0\0\0";

    fn info() -> ImageInfo {
        ImageInfo {
            title: Some("kafka_upstream".into()),
            version: Some("0.1.0".into()),
            source: None,
            licenses: Some("Apache-2.0".into()),
        }
    }

    #[test]
    fn the_same_module_always_gives_the_same_image() {
        let a = WasmImage::build(MODULE, &info()).unwrap();
        let b = WasmImage::build(MODULE, &info()).unwrap();
        assert_eq!(a, b);
        assert_eq!(a.digest(), b.digest());
        let other = WasmImage::build(b"\0asm\x01\0\0\0\0", &info()).unwrap();
        assert_ne!(a.digest(), other.digest());
    }

    #[test]
    fn the_manifest_is_the_compat_variant_istio_reads() {
        let image = WasmImage::build(MODULE, &info()).unwrap();
        image.verify().unwrap();
        let manifest: Value = serde_json::from_slice(&image.manifest).unwrap();
        assert_eq!(manifest["mediaType"], MANIFEST_MEDIA_TYPE);
        assert_eq!(manifest["config"]["mediaType"], CONFIG_MEDIA_TYPE);
        assert_eq!(manifest["layers"].as_array().unwrap().len(), 1);
        assert_eq!(manifest["layers"][0]["mediaType"], LAYER_MEDIA_TYPE);
        assert_eq!(manifest["annotations"]["org.opencontainers.image.version"], "0.1.0");
        let config: Value = serde_json::from_slice(&image.config).unwrap();
        assert_eq!(config["os"], "wasip1");
        assert_eq!(config["architecture"], "wasm");
        assert_eq!(image.module().unwrap(), MODULE);
    }

    #[test]
    fn the_layer_holds_plugin_wasm_with_fixed_metadata() {
        let image = WasmImage::build(MODULE, &info()).unwrap();
        let mut archive = tar::Archive::new(flate2::read::GzDecoder::new(image.layer.as_slice()));
        let entries: Vec<_> = archive.entries().unwrap().map(Result::unwrap).collect();
        assert_eq!(entries.len(), 1);
        let header = entries[0].header();
        assert_eq!(header.path().unwrap().to_str(), Some(PLUGIN_FILE));
        assert_eq!(header.mode().unwrap(), 0o644);
        assert_eq!(header.mtime().unwrap(), 0);
        // gzip header bytes 4..8 are MTIME: zero.
        assert_eq!(&image.layer[4..8], &[0, 0, 0, 0]);
    }

    #[test]
    fn a_non_wasm_file_is_refused() {
        let err = WasmImage::build(b"hello", &info()).unwrap_err();
        assert!(err.to_string().contains("not a WebAssembly binary"), "{err}");
    }

    #[test]
    fn the_layout_round_trips_and_detects_a_corrupted_blob() {
        let dir = tempfile::tempdir().unwrap();
        let image = WasmImage::build(MODULE, &info()).unwrap();
        write_layout(dir.path(), &image, "0.1.0").unwrap();
        assert_eq!(read_layout(dir.path()).unwrap(), image);
        let index: Value = serde_json::from_slice(&std::fs::read(dir.path().join("index.json")).unwrap()).unwrap();
        assert_eq!(index["manifests"][0]["digest"], image.digest().as_str());
        assert_eq!(
            index["manifests"][0]["annotations"]["org.opencontainers.image.ref.name"],
            "0.1.0"
        );

        let layer_path = blob_path(dir.path(), &digest_of(&image.layer)).unwrap();
        std::fs::write(&layer_path, b"tampered").unwrap();
        let err = read_layout(dir.path()).unwrap_err();
        assert!(err.to_string().contains("layer blob does not match"), "{err}");
    }

    #[test]
    fn extract_plugin_refuses_layers_without_the_module() {
        let err = extract_plugin(b"not gzip").unwrap_err();
        assert!(err.to_string().contains("not a gzipped tar"), "{err}");
        let mut header = tar::Header::new_ustar();
        header.set_path("other.wasm").unwrap();
        header.set_size(4);
        header.set_cksum();
        let mut builder = tar::Builder::new(Vec::new());
        builder.append(&header, &b"\0asm"[..]).unwrap();
        let layer = gzip(&builder.into_inner().unwrap()).unwrap();
        let err = extract_plugin(&layer).unwrap_err();
        assert!(err.to_string().contains("holds no plugin.wasm"), "{err}");
    }

    #[test]
    fn blob_paths_accept_only_sha256_hex() {
        assert!(blob_path(Path::new("/x"), "sha256:../../etc/passwd").is_err());
        assert!(blob_path(Path::new("/x"), "md5:00").is_err());
        assert!(blob_path(Path::new("/x"), &digest_of(b"")).is_ok());
    }
}
