//! `token create|list|revoke`: the bearer tokens of the remote API, as hashes in `processes_{id}.tokens.json`.

use anyhow::Context;
use pm_http::auth::{parse_expiry, Scope, TokenStore};
use pm_registry::Paths;

use crate::cli::{Cli, TokenAction, TokenArgs};
use crate::code;

pub(crate) fn run(cli: &Cli, paths: &Paths, args: &TokenArgs) -> anyhow::Result<u8> {
    let store = TokenStore::new(paths.tokens_file());
    match &args.action {
        TokenAction::Create { name, scope, expires, processes } => {
            let scope = Scope::parse(scope).context("scope must be read, operate or admin")?;
            let expires = match expires {
                Some(text) => Some(parse_expiry(text).with_context(|| {
                    format!("--expires {text:?}: give a whole number and a unit s, m, h, d or w (e.g. 30d)")
                })?),
                None => None,
            };
            let token = store.create(name, scope, expires, processes.clone())?;
            if cli.json {
                println!("{}", serde_json::json!({ "name": name, "scope": scope, "token": token }));
            } else {
                println!("{token}");
                eprintln!(
                    "token {name:?} ({scope}) made; it is shown only now. Send it as 'Authorization: Bearer <token>', \
                     or with --token / PROCESS_MONITOR_TOKEN."
                );
            }
            Ok(code::OK)
        }
        TokenAction::List => {
            let tokens = store.list()?;
            if cli.json {
                let list: Vec<serde_json::Value> = tokens
                    .iter()
                    .map(|record| {
                        serde_json::json!({
                            "name": record.name,
                            "scope": record.scope,
                            "processes": record.processes,
                            "createdAt": record.created_at,
                            "expiresAt": record.expires_at,
                        })
                    })
                    .collect();
                println!("{}", serde_json::to_string_pretty(&serde_json::json!({ "tokens": list }))?);
            } else if tokens.is_empty() {
                println!("no tokens");
            } else {
                println!("{:<24} {:<8} {:<26} {:<26} PROCESSES", "NAME", "SCOPE", "CREATED", "EXPIRES");
                for record in tokens {
                    let expires = record.expires_at.map_or_else(|| "never".to_owned(), |at| at.to_string());
                    let processes =
                        if record.processes.is_empty() { "all".to_owned() } else { record.processes.join(",") };
                    println!(
                        "{:<24} {:<8} {:<26} {:<26} {}",
                        record.name.escape_debug().to_string(),
                        // As strings: the width pads strings, not every Display type.
                        record.scope.to_string(),
                        record.created_at.to_string(),
                        expires,
                        processes
                    );
                }
            }
            Ok(code::OK)
        }
        TokenAction::Revoke { name } => {
            if !store.revoke(name)? {
                anyhow::bail!("no token named {name:?}");
            }
            if cli.json {
                println!("{}", serde_json::json!({ "success": true, "name": name }));
            } else {
                println!("token {name:?} revoked");
            }
            Ok(code::OK)
        }
    }
}
