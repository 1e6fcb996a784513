//! The `wasm-oci` binary's build command and exit codes (push and pull against a real registry
//! run in the end-to-end suite, tests/e2e/test_oci.py).

use std::path::Path;
use std::process::Command;

fn wasm_oci(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_wasm-oci"))
        .args(args)
        .output()
        .expect("run wasm-oci")
}

fn write_module(dir: &Path) -> std::path::PathBuf {
    let path = dir.join("filter.wasm");
    std::fs::write(&path, b"\0asm\x01\0\0\0").unwrap();
    path
}

/// A layout written by `wasm-oci build` from a minimal module, in `dir`.
fn built_layout(dir: &Path) -> std::path::PathBuf {
    let module = write_module(dir);
    let layout = dir.join("layout");
    let built = wasm_oci(&[
        "build",
        "--wasm",
        module.to_str().unwrap(),
        "--out",
        layout.to_str().unwrap(),
    ]);
    assert!(built.status.success(), "{}", String::from_utf8_lossy(&built.stderr));
    layout
}

#[test]
fn build_writes_a_layout_and_prints_its_digest() {
    let dir = tempfile::tempdir().unwrap();
    let module = write_module(dir.path());
    let layout = dir.path().join("layout");
    let out = wasm_oci(&[
        "build",
        "--wasm",
        module.to_str().unwrap(),
        "--out",
        layout.to_str().unwrap(),
        "--tag",
        "1.2.3",
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let digest = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    let image = wasm_oci::read_layout(&layout).unwrap();
    assert_eq!(digest, image.digest());
    assert_eq!(image.module().unwrap(), std::fs::read(&module).unwrap());
}

#[test]
fn a_file_that_is_not_wasm_is_a_runtime_failure() {
    let dir = tempfile::tempdir().unwrap();
    let text = dir.path().join("notes.txt");
    std::fs::write(&text, "hello").unwrap();
    let out = wasm_oci(&[
        "build",
        "--wasm",
        text.to_str().unwrap(),
        "--out",
        dir.path().join("l").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("not a WebAssembly binary"), "{stderr}");
}

#[test]
fn usage_errors_exit_2_and_a_bad_reference_exits_1() {
    assert_eq!(wasm_oci(&["build"]).status.code(), Some(2));
    let dir = tempfile::tempdir().unwrap();
    let layout = built_layout(dir.path());
    let out = wasm_oci(&["push", "--layout", layout.to_str().unwrap(), "Not A Reference"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is not an image reference"));
}

#[test]
fn push_to_a_closed_port_fails_with_the_reason() {
    let dir = tempfile::tempdir().unwrap();
    let layout = built_layout(dir.path());
    // Port 1 on loopback: nothing listens there, the connection is refused at once.
    let out = wasm_oci(&[
        "push",
        "--plain-http",
        "--layout",
        layout.to_str().unwrap(),
        "127.0.0.1:1/x:y",
    ]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("pushing blob"));
}

#[test]
fn a_username_without_a_password_in_the_environment_is_refused_before_any_request() {
    let dir = tempfile::tempdir().unwrap();
    let layout = built_layout(dir.path());
    let out = Command::new(env!("CARGO_BIN_EXE_wasm-oci"))
        .args([
            "push",
            "--username",
            "ci",
            "--layout",
            layout.to_str().unwrap(),
            "127.0.0.1:1/x:y",
        ])
        .env_remove("WASM_OCI_PASSWORD")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("WASM_OCI_PASSWORD"));
}
