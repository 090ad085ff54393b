use std::path::PathBuf;
use std::process::ExitCode;

use crate::admission::{POLICY_LABEL, REFLECTION_LABEL};
use crate::slo_spec::CatalogEvent;
use crate::store::{PolicySources, PolicyStore, StoreEvent, read_sources};

#[derive(Debug, clap::Args)]
pub struct LintArgs {
    /// Policy or reflection ConfigMap manifests, and the SLO specs (Sloth, Pyrra,
    /// OpenSLO) policies name in slo.source (files or directories).
    #[arg(required = true)]
    pub files: Vec<PathBuf>,
    /// slo-guard's own namespace, whose policies may govern other namespaces.
    #[arg(long, env = "SLO_GUARD_NAMESPACE", default_value = "slo-guard")]
    pub namespace: String,
}

/// Exit 0 when every ConfigMap is valid, 1 when any is not, 2 when a file is unreadable.
pub fn run(args: LintArgs) -> ExitCode {
    let store = PolicyStore::new(args.namespace.clone());
    let mut invalid = 0;
    let mut checked = 0;
    let mut sources = PolicySources::default();
    for path in &args.files {
        match read_sources(path, "default") {
            Ok(read) => sources.extend(read),
            Err(error) => {
                eprintln!("error: {error}");
                return ExitCode::from(2);
            }
        }
    }
    // Specs first, wherever they are, so that a policy may name a spec in another file.
    for spec in sources.slo_specs {
        checked += 1;
        let origin = spec.origin.clone();
        match store.apply_slo_spec(spec).0 {
            CatalogEvent::Loaded(key) => println!("ok: SLO spec {key} ({origin})"),
            CatalogEvent::Rejected { key, error, .. } => {
                invalid += 1;
                println!("error: SLO spec {key}: {error}");
            }
        }
    }
    {
        for document in sources.configmaps {
            let what = if document.has_label(POLICY_LABEL) {
                "policy"
            } else if document.has_label(REFLECTION_LABEL) {
                "reflection"
            } else {
                println!(
                    "{}: skipped ConfigMap {}/{}: it has neither the {POLICY_LABEL} nor the {REFLECTION_LABEL} label set to \"true\"",
                    document.origin, document.namespace, document.name
                );
                continue;
            };
            checked += 1;
            match store.apply(&document) {
                StoreEvent::Rejected { error, .. } => {
                    invalid += 1;
                    println!(
                        "error: {what} {}/{}: {error}",
                        document.namespace, document.name
                    );
                }
                _ => {
                    println!(
                        "ok: {what} {}/{} ({})",
                        document.namespace, document.name, document.origin
                    );
                }
            }
        }
    }
    if checked == 0 {
        eprintln!("error: no slo-guard ConfigMaps or SLO specs found in the given files");
        return ExitCode::from(2);
    }
    if invalid > 0 {
        println!("{invalid} of {checked} documents invalid");
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    }
}
