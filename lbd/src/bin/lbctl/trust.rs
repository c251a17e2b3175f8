//! `lbctl trust ...`: the group CA and device certificates of the mirroring channels, on local
//! files only (no daemon).

use std::path::PathBuf;

use serde_json::{json, Value};

use crate::args::TrustCmd;

/// `lbctl trust ...`: local files only.
pub fn trust(cmd: &TrustCmd, json: bool) -> Result<String, lbd::mirror::trust::TrustError> {
    use lbd::mirror::trust as mt;
    match cmd {
        TrustCmd::Init { group, dir, force } => {
            let ca = mt::create_ca(group)?;
            let (crt, key) = mt::write_pair(dir, "ca", &ca, *force)?;
            let fp = mt::inspect(&crt)?.fingerprint;
            Ok(format!(
                "created CA of device group {group}: {} {}\nfingerprint (SHA-256): {fp}\n",
                crt.display(),
                key.display()
            ))
        }
        TrustCmd::Issue {
            dir,
            device,
            addresses,
            force,
        } => {
            if device.eq_ignore_ascii_case("ca") {
                return Err(mt::TrustError::BadName(
                    device.clone(),
                    "reserved for the group CA",
                ));
            }
            let ca = mt::read_pair(dir, "ca")?;
            let pair = mt::issue_device(&ca, device, addresses)?;
            let (crt, key) = mt::write_pair(dir, device, &pair, *force)?;
            let info = mt::inspect(&crt)?;
            Ok(format!(
                "issued certificate of device {device}: {} {}\nnames: {}\nfingerprint (SHA-256): {}\n",
                crt.display(),
                key.display(),
                info.sans.join(", "),
                info.fingerprint
            ))
        }
        TrustCmd::Show { dir } => {
            let entries = std::fs::read_dir(dir).map_err(|e| mt::TrustError::Io(dir.clone(), e))?;
            let mut files: Vec<PathBuf> = entries
                .filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "crt"))
                .collect();
            files.sort();
            let infos = files
                .iter()
                .map(|f| mt::inspect(f))
                .collect::<Result<Vec<_>, _>>()?;
            if json {
                let v: Vec<Value> = infos
                    .iter()
                    .map(|i| {
                        json!({"file": i.file, "subject": i.subject, "sans": i.sans,
                               "not_after": i.not_after, "ca": i.is_ca,
                               "sha256": i.fingerprint})
                    })
                    .collect();
                return Ok(serde_json::to_string_pretty(&v).unwrap_or_default() + "\n");
            }
            if infos.is_empty() {
                return Ok(format!("no certificates in {}\n", dir.display()));
            }
            let mut out = String::new();
            for i in infos {
                out.push_str(&format!(
                    "{}{}\n  subject:   {}\n  names:     {}\n  not after: {}\n  sha256:    {}\n",
                    i.file.display(),
                    if i.is_ca { " (CA)" } else { "" },
                    i.subject,
                    if i.sans.is_empty() {
                        "-".to_string()
                    } else {
                        i.sans.join(", ")
                    },
                    i.not_after,
                    i.fingerprint
                ));
            }
            Ok(out)
        }
    }
}
