//! The gateway against real S3 clients: runs `tests/clients/test_clients.py` (the aws cli and
//! boto3, pinned in `tests/clients/requirements.txt`) against this build's `tessera` binary.
//! The Python virtual environment is made under the target directory on first use (and again
//! when the requirements change). `TESSERA_CLIENT_TESTS` picks test classes or methods, e.g.
//! `TESSERA_CLIENT_TESTS=ListingTest cargo test -p tessera-gateway --test clients`.

#![allow(missing_docs, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::{Path, PathBuf};
use std::process::Command;

fn run(command: &mut Command) {
    let status = command.status().unwrap_or_else(|e| panic!("{command:?}: {e}"));
    assert!(status.success(), "{command:?} exited {status}");
}

/// The virtual environment with the pinned clients, made or refreshed as needed.
fn venv(clients: &Path) -> PathBuf {
    let target = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target");
    let venv = target.join("client-tests-venv");
    let requirements = clients.join("requirements.txt");
    let wanted = std::fs::read(&requirements).unwrap();
    if std::fs::read(venv.join("requirements.txt")).ok().as_deref() != Some(&wanted[..]) {
        let _ = std::fs::remove_dir_all(&venv);
        run(Command::new("python3").arg("-m").arg("venv").arg(&venv));
        run(Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
            .arg(&requirements));
        std::fs::write(venv.join("requirements.txt"), wanted).unwrap();
    }
    venv
}

#[test]
fn the_aws_cli_and_boto3_work_against_tessera_serve() {
    let clients = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/clients");
    let venv = venv(&clients);
    let mut command = Command::new(venv.join("bin/python"));
    command.current_dir(&clients).args(["-m", "unittest", "-v"]);
    match std::env::var("TESSERA_CLIENT_TESTS") {
        Ok(picked) if !picked.trim().is_empty() => {
            command.args(picked.split_whitespace().map(|t| format!("test_clients.{t}")))
        }
        _ => command.arg("test_clients"),
    };
    run(command.env("TESSERA_BIN", env!("CARGO_BIN_EXE_tessera")));
}
