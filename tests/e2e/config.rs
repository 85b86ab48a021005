//! Every YAML file under deploy/ parses into a valid configuration this build can run, so the
//! examples cannot rot.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};

fn yaml_files(dir: &Path, out: &mut Vec<PathBuf>) -> Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            // systemd/ holds unit and sysusers files (deploy.rs checks those), not receptor
            // configs, though sysusers files end in .conf too.
            // examples/awx-mesh names certificate files that only exist once make-certs.sh has
            // run: deploy.rs makes them and runs the same check on those configs.
            if path
                .file_name()
                .is_some_and(|n| n == "systemd" || n == "awx-mesh")
            {
                continue;
            }
            yaml_files(&path, out)?;
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "conf")
        ) {
            out.push(path);
        }
    }
    Ok(())
}

/// Parses `text` and fails on anything this build accepts but does not run.
pub(crate) fn check_supported(text: &str, name: &str) -> Result<()> {
    let config = receptor_server::config::from_yaml_str(text, name)
        .map_err(|e| anyhow::anyhow!("{e}"))
        .with_context(|| format!("{name} does not parse"))?;
    let unsupported = receptor_server::config::unsupported(&config);
    anyhow::ensure!(unsupported.is_empty(), "{name}: {unsupported:?}");
    Ok(())
}

#[test]
fn every_deploy_config_parses_and_is_supported() -> Result<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("deploy");
    let mut files = Vec::new();
    yaml_files(&root, &mut files)?;
    assert!(
        files.len() >= 5,
        "expected the default, packaged and example configs, found {files:?}"
    );
    for file in files {
        let text = std::fs::read_to_string(&file)?;
        check_supported(&text, &file.display().to_string())?;
    }
    Ok(())
}
