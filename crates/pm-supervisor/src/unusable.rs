//! Registry entries that cannot run (see [`pm_core::UnusableEntry`]) in the monitor's views.

use std::collections::BTreeMap;

use pm_core::{ProcessStatus, UnusableEntry};

/// `statuses` of the supervised processes (all, or the one `only` names) with the registry's unusable entries
/// added as `failed` with their `lastError`. An unusable entry whose process is supervised (a hand edit broke the
/// entry of a running process, which goes on from memory) keeps its status, with the reason as `lastError`.
pub(crate) fn with_unusable(
    mut statuses: Vec<ProcessStatus>,
    unusable: &BTreeMap<String, UnusableEntry>,
    only: Option<&str>,
) -> Vec<ProcessStatus> {
    for (key, entry) in unusable {
        if only.is_some_and(|only| only != key) {
            continue;
        }
        let status = entry.status(key);
        match statuses.iter_mut().find(|supervised| supervised.id == *key) {
            Some(supervised) => supervised.last_error = status.last_error,
            None => statuses.push(status),
        }
    }
    statuses
}

/// Logs the unusable entries of a registry the monitor takes over.
pub(crate) fn report(unusable: &BTreeMap<String, UnusableEntry>) {
    for (key, entry) in unusable {
        tracing::error!(process = %key, "registry entry cannot run: {}; kept as it is in the file, not run", entry.reason);
    }
}
